// Drives a virtual MCP server with the official TypeScript SDK's client declaring sampling and
// elicitation, so the reference server may ask it mid-call; also listens on the session's GET
// stream. Prints what it saw as one JSON line: node relay.mjs <url> <key> [logs].
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [url, key, wantLogs] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { authorization: `Bearer ${key}` } },
});
const client = new Client(
  { name: "shardgate-e2e-relay", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: {} } },
);
const seen = { sampled: [], elicited: [], logs: [] };
client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
  seen.sampled.push(request.params);
  const asked = request.params.messages.map((m) => m.content.text).join(" ");
  return { model: "stub-model", role: "assistant", content: { type: "text", text: `sampled reply to: ${asked}` } };
});
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  seen.elicited.push(request.params.message);
  return { action: "accept", content: { name: "Ada", check: true, email: "ada.lovelace@example.com" } };
});
client.setNotificationHandler(LoggingMessageNotificationSchema, async (note) => {
  seen.logs.push(note.params);
});
await client.connect(transport);
seen.tools = (await client.listTools()).tools.map((t) => t.name).sort();
seen.sampling = await client.callTool({
  name: "everything__trigger-sampling-request",
  arguments: { prompt: "what is 6 times 7?", maxTokens: 20 },
});
seen.elicitation = await client.callTool({ name: "everything__trigger-elicitation-request", arguments: {} });
if (wantLogs === "logs") {
  // Logs the server sends outside any call arrive on the GET stream (one at once, then every 5 s).
  await client.callTool({ name: "everything__toggle-simulated-logging", arguments: {} });
  const deadline = Date.now() + 12000;
  while (seen.logs.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await client.callTool({ name: "everything__toggle-simulated-logging", arguments: {} });
}
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(seen));
