// Loading state for one asynchronous query: re-run when `key` changes, abort the previous run.
import { useEffect, useState } from "react";

export type Load<T> = { status: "idle" } | { status: "loading" } | { status: "done"; value: T } | { status: "error"; error: unknown };

export function useLoad<T>(key: string | null, run: (signal: AbortSignal) => Promise<T>): Load<T> {
  // Tagged with the key it answers, so a result is never shown for another key (another
  // tenant's lists) between a key change and the effect that starts the new load.
  const [state, setState] = useState<{ key: string | null; load: Load<T> }>({ key: null, load: { status: "idle" } });
  useEffect(() => {
    if (key === null) {
      setState({ key, load: { status: "idle" } });
      return;
    }
    const controller = new AbortController();
    setState({ key, load: { status: "loading" } });
    run(controller.signal).then(
      (value) => !controller.signal.aborted && setState({ key, load: { status: "done", value } }),
      (error) => !controller.signal.aborted && setState({ key, load: { status: "error", error } }),
    );
    return () => controller.abort();
    // `run` closes over what `key` names; the key is the dependency.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  if (state.key !== key) return key === null ? { status: "idle" } : { status: "loading" };
  return state.load;
}

/** A timeline step in seconds: a round number giving at most ~200 points over `spanMs`. */
export function stepSeconds(spanMs: number): number {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const wanted = spanMs / 1000 / 200;
  return steps.find((step) => step >= wanted) ?? 86400;
}
