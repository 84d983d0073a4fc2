// Loaded into the MCP conformance runner with `node --import`: its MCP client has no option
// for request headers, and the gateway answers 401 to a request without an Arbiter agent
// key. This gives every fetch to the gateway the key, as any real client would send it;
// nothing else about the runner's requests is changed.
const key = process.env.ARBITER_CONFORMANCE_KEY;
const base = process.env.ARBITER_CONFORMANCE_URL;
const inner = globalThis.fetch;

globalThis.fetch = (input, init = {}) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (key && base && url.startsWith(base)) {
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set("authorization", `Bearer ${key}`);
    init = { ...init, headers };
  }
  return inner(input, init);
};
