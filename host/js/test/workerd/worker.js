// A Worker that calls a flaky upstream through ricochet's retryFetch and reports what it saw.
import { retryFetch } from "./ricochet-retry/src/workerd.js";

export default {
  async fetch(request, env) {
    const retries = [];
    const started = Date.now();
    const response = await retryFetch(`${env.UPSTREAM}/flaky`, {
      policy: { max_attempts: 4, initial_delay: 0.1, max_delay: 1, jitter: false },
      onRetry: ({ attempt, delayMs, status, category }) => retries.push({ attempt, delayMs, status, category }),
    });
    return Response.json({ status: response.status, body: await response.text(), retries, tookMs: Date.now() - started });
  },
};
