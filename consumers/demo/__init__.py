"""The pieces of `streamrisk demo` (the command itself is `consumers/cli/demo.py`).

- `plan`: what to simulate and how fast (scenarios, simulated horizon, warm-up, pacing);
- `live`: the in-memory picture of a run (counts, recent alerts/decisions/breaches, trading
  states, throughput, detection signals), fed from the output topics;
- `reader`: the thread that reads the output topics into a `LiveState`;
- `workers`: the market and order workers as child processes (logs, PIDs, progress);
- `view`: the rich live view and the plain progress lines for pipes;
- `summary`: detections against the scenario labels and the end-of-run summary.
"""
