// Drives a virtual MCP server of the gateway with the official TypeScript SDK's client over
// streamable HTTP, and prints what it saw as one JSON line: node client.mjs <url> <key>.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "shardgate-e2e", version: "1.0.0" });
await client.connect(transport);
const seen = { protocolVersion: transport.protocolVersion, sessionId: transport.sessionId };
seen.server = client.getServerVersion();
seen.tools = (await client.listTools()).tools.map((t) => t.name).sort();
seen.echo = await client.callTool({ name: "everything__echo", arguments: { message: "hello from the official SDK" } });
seen.sum = await client.callTool({ name: "everything__get-sum", arguments: { a: 2, b: 3 } });
seen.add = await client.callTool({ name: "alpha__add", arguments: { a: 20, b: 22 } });
try {
  await client.callTool({ name: "everything__get-env", arguments: {} });
  seen.refused = null;
} catch (e) {
  seen.refused = { code: e.code, message: e.message };
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(seen));
