// Coze "Code" node (JavaScript), placed last (and on each failure branch to record).
// Input parameters to declare on the node:
//   run_id    ← `run_id` of the "flowguard start" Code node (coze-start.js), placed first
//   t0        ← `now` of that node (or of another Code node placed just before the node to time)
//   output    ← the timed node's output (leave empty on the failure branch)
//   errorBody ← the timed node's `errorBody` on its failure branch (leave empty on success)
// Output: `body` (String). The HTTP node that follows sends {{body}} as its raw JSON body.
// JSON.stringify makes the body valid JSON whatever the values hold (quotes, new lines).
async function main({ params }) {
  const now = Date.now();
  const failed = Boolean(params.errorBody);
  const error = failed ? (params.errorBody.errorMessage ?? JSON.stringify(params.errorBody)) : undefined;
  const node = {
    id: `${params.run_id}-write_script`, type: "node.finished", flow: "coze_douyin_script",
    run_id: String(params.run_id), node: "write_script", kind: "llm",
    started_at: Number(params.t0), ended_at: now,
    status: failed ? "failed" : "succeeded",
    ...(failed ? { error } : { output: params.output }),
  };
  const end = {
    id: `${params.run_id}-end`, type: "run.finished", flow: "coze_douyin_script",
    run_id: String(params.run_id), ts: now,
    status: failed ? "failed" : "succeeded",
    ...(failed ? { failed_node: "write_script" } : {}),
  };
  return { body: JSON.stringify({ events: [node, end] }) };
}
