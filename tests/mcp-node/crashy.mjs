// A stdio MCP server for fault tests, built on the official TypeScript SDK: `echo`, `pid`
// (its process id) and `crash` (exits at once, mid-call).
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const server = new Server({ name: "crashy", version: "1.0.0" }, { capabilities: { tools: {} } });
const object = { type: "object", properties: { text: { type: "string" } } };
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    { name: "echo", description: "Echoes text.", inputSchema: object },
    { name: "pid", description: "Its process id.", inputSchema: { type: "object" } },
    { name: "crash", description: "Exits at once.", inputSchema: { type: "object" } },
  ],
}));
server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const { name, arguments: args } = request.params;
  if (name === "crash") process.exit(3);
  const text = name === "pid" ? String(process.pid) : `stdio: ${args?.text ?? ""}`;
  return { content: [{ type: "text", text }] };
});
await server.connect(new StdioServerTransport());
