// Coze "Code" node (JavaScript), placed first: a run id unique across runs and spaces, and the
// start time. Outputs: `run_id` (String), `now` (Number).
async function main({ params }) {
  const now = Date.now();
  return { run_id: `coze-${now}-${Math.random().toString(36).slice(2, 10)}`, now };
}
