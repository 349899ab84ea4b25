// The Node Anthropic SDK against the router: one message, one stream, one error.
// Run by tests/component/router/test_messages_node.py with ROUTER_URL and MODEL set; prints
// one JSON line that the test checks.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({
  baseURL: process.env.ROUTER_URL,
  apiKey: "unused",
  maxRetries: 0,
  timeout: 20000,
});
const model = process.env.MODEL;
const messages = [{ role: "user", content: "hello" }];

const message = await client.messages.create({ model, max_tokens: 4, messages });
const stream = client.messages.stream({ model, max_tokens: 3, messages });
const events = [];
for await (const event of stream) events.push(event.type);
const final = await stream.finalMessage();
let error = null;
try {
  await client.messages.create({ model: "no-such-model", max_tokens: 4, messages });
} catch (e) {
  error = { status: e.status, type: e.error?.error?.type ?? null };
}
console.log(
  JSON.stringify({
    message: { stop: message.stop_reason, output: message.usage.output_tokens, text: message.content[0]?.text ?? "" },
    stream: { events, stop: final.stop_reason, output: final.usage.output_tokens },
    error,
  }),
);
