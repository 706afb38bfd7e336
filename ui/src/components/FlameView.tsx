// One window: the SelectSeries timeline (drag to narrow the window) above the merged flame graph.
import * as api from "../api";
import { explain, formatDuration, formatTime, formatValue } from "../format";
import { stepSeconds, useLoad } from "../hooks";
import { selector, type ViewState } from "../state";
import { Exports } from "./Exports";
import { FlamePanel } from "./FlamePanel";
import { Timeline } from "./Timeline";

/** Nodes asked of the server: enough for a 16,384-node flame graph. */
export const MAX_NODES = 16384;

export interface QueryProps {
  start: number;
  end: number;
  credentials: api.Credentials;
  credentialKey: string;
  profileType: api.ProfileType;
  unit: string;
  refreshes: number;
  state: ViewState;
  update: (patch: Partial<ViewState>) => void;
}

/** The points of every series summed per timestamp (one series without group_by). */
export function seriesPoints(series: api.Series[]): [number, number][] {
  const sums = new Map<number, number>();
  for (const one of series) for (const point of one.points) sums.set(point.timestamp, (sums.get(point.timestamp) ?? 0) + point.value);
  return [...sums].sort((a, b) => a[0] - b[0]);
}

export function useTimeline(props: QueryProps, start: number, end: number) {
  const { credentials, profileType, state } = props;
  const step = stepSeconds(end - start);
  const labelSelector = selector(state);
  const load = useLoad(
    `${props.credentialKey}|${profileType.ID}|${labelSelector}|${start}|${end}|${props.refreshes}`,
    (signal) => api.selectSeries(credentials, { profileTypeID: profileType.ID, labelSelector, start, end, step }, signal),
  );
  return { load, stepMs: step * 1000 };
}

export function FlameView(props: QueryProps) {
  const { start, end, credentials, profileType, unit, state, update } = props;
  const labelSelector = selector(state);
  const timeline = useTimeline(props, start, end);
  const merge = useLoad(`${props.credentialKey}|${profileType.ID}|${labelSelector}|${start}|${end}|${props.refreshes}`, (signal) =>
    api.selectMergeStacktraces(
      credentials,
      { profileTypeID: profileType.ID, labelSelector, start, end, maxNodes: MAX_NODES },
      signal,
    ),
  );
  const what = `${state.service || "all services"} · ${profileType.name} ${profileType.sampleType}`;
  return (
    <section className="flame-view">
      {timeline.load.status === "done" && (
        <Timeline
          points={seriesPoints(timeline.load.value)}
          start={start}
          end={end}
          stepMs={timeline.stepMs}
          unit={unit}
          color="#ff9830"
          testId="timeline"
          title="Drag across the timeline to narrow the window"
          onSelect={(from, until) => update({ from: String(from), until: String(until) })}
        />
      )}
      {timeline.load.status === "error" && <p className="message error">{explain(timeline.load.error)}</p>}
      {merge.status === "loading" && <p className="message loading">Loading the flame graph of {what}…</p>}
      {merge.status === "error" && <p className="message error">{explain(merge.error)}</p>}
      {merge.status === "done" &&
        (merge.value.total === 0 ? (
          <p className="message empty" data-testid="no-data">
            No {profileType.sampleType} samples for {what} between {formatTime(start)} and {formatTime(end)} (
            {formatDuration(end - start)}). Pick a longer time range or another service.
          </p>
        ) : (
          <>
            <p className="status" data-testid="flame-total" data-total={merge.value.total} data-from={start} data-end={end}>
              {what} · {formatTime(start)} to {formatTime(end)} ({formatDuration(end - start)}) · total{" "}
              {formatValue(merge.value.total, unit)}
            </p>
            <FlamePanel
              graph={merge.value}
              unit={unit}
              search={state.search}
              onSearch={(search) => update({ search })}
              extraHeaderElements={
                <Exports
                  credentials={credentials}
                  window={{ type: profileType.ID, selector: labelSelector, service: state.service, from: start, end }}
                />
              }
            />
          </>
        ))}
    </section>
  );
}
