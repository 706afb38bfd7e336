// Comparison, as in Pyroscope's comparison view: a baseline and a comparison window, each picked
// on its own timeline, and querier.v1 Diff in the component's diff mode. The component colours
// and ranks by each side's share of its own total, so a longer baseline does not make
// everything look like it shrank; the absolute values are in tooltips and in the status line.
import * as api from "../api";
import { explain, formatDuration, formatTime, formatValue } from "../format";
import { useLoad } from "../hooks";
import { resolveTime, selector } from "../state";
import { Exports } from "./Exports";
import { FlamePanel } from "./FlamePanel";
import { MAX_NODES, seriesPoints, useTimeline, type QueryProps } from "./FlameView";
import { Timeline } from "./Timeline";

export function DiffView(props: QueryProps) {
  const { start, end, credentials, profileType, unit, state, update } = props;
  const labelSelector = selector(state);
  const timeline = useTimeline(props, start, end);
  // Without chosen windows: the first half of the range against the second half.
  const middle = Math.floor((start + end) / 2);
  const pick = (from: string, until: string, fallback: [number, number]): [number, number] => {
    const a = resolveTime(from, Date.now());
    const b = resolveTime(until, Date.now());
    return Number.isNaN(a) || Number.isNaN(b) || a >= b ? fallback : [a, b];
  };
  const left = pick(state.leftFrom, state.leftUntil, [start, middle]);
  const right = pick(state.rightFrom, state.rightUntil, [middle + 1, end]);
  const query = (w: [number, number]): api.MergeQuery => ({
    profileTypeID: profileType.ID,
    labelSelector,
    start: w[0],
    end: w[1],
    maxNodes: MAX_NODES,
  });
  const diff = useLoad(`${props.credentialKey}|${profileType.ID}|${labelSelector}|${left}|${right}|${props.refreshes}`, (signal) =>
    api.diff(credentials, query(left), query(right), signal),
  );
  const points = timeline.load.status === "done" ? seriesPoints(timeline.load.value) : [];
  const describe = (w: [number, number]) => `${formatTime(w[0])} to ${formatTime(w[1])} (${formatDuration(w[1] - w[0] + 1)})`;
  const totals = diff.status === "done" ? diffTotals(diff.value) : null;
  return (
    <section className="diff-view">
      {timeline.load.status === "error" && <p className="message error">{explain(timeline.load.error)}</p>}
      <div className="diff-timelines">
        {(
          [
            ["baseline", "Baseline", left, "#5794f2", (a: number, b: number) => update({ leftFrom: String(a), leftUntil: String(b) })],
            ["comparison", "Comparison", right, "#73bf69", (a: number, b: number) => update({ rightFrom: String(a), rightUntil: String(b) })],
          ] as const
        ).map(([id, title, selection, color, onSelect]) => (
          <div key={id} className="diff-side">
            <Timeline
              points={points}
              start={start}
              end={end}
              stepMs={timeline.stepMs}
              unit={unit}
              color={color}
              testId={`timeline-${id}`}
              title={`${title}: ${describe(selection)} — drag to choose`}
              selection={{ from: selection[0], until: selection[1] }}
              onSelect={onSelect}
            />
          </div>
        ))}
      </div>
      {diff.status === "loading" && <p className="message loading">Comparing the two windows…</p>}
      {diff.status === "error" && <p className="message error">{explain(diff.error)}</p>}
      {totals && totals.left === 0 && totals.right === 0 && (
        <p className="message empty" data-testid="no-data">
          Neither window holds {profileType.sampleType} samples for {state.service || "all services"}: choose windows on
          the timelines where it has data.
        </p>
      )}
      {diff.status === "done" && totals && (totals.left > 0 || totals.right > 0) && (
        <>
          <p className="status" data-testid="diff-totals" data-left={totals.left} data-right={totals.right}>
            Baseline {formatValue(totals.left, unit)} over {formatDuration(left[1] - left[0] + 1)} · comparison{" "}
            {formatValue(totals.right, unit)} over {formatDuration(right[1] - right[0] + 1)} · each side is shown as a
            share of its own total
          </p>
          {(totals.left === 0 || totals.right === 0) && (
            <p className="message empty">
              The {totals.left === 0 ? "baseline" : "comparison"} window holds no samples: every function shows as{" "}
              {totals.left === 0 ? "new" : "removed"}.
            </p>
          )}
          <FlamePanel
            graph={diff.value}
            unit={unit}
            search={state.search}
            onSearch={(search) => update({ search })}
            extraHeaderElements={
              <Exports
                credentials={credentials}
                window={{
                  type: profileType.ID,
                  selector: labelSelector,
                  service: state.service,
                  from: right[0],
                  end: right[1],
                  baseline: { from: left[0], end: left[1] },
                }}
              />
            }
          />
        </>
      )}
    </section>
  );
}

/** Each side's total: the root's left and right totals (groups of 7 on level 0). */
function diffTotals(graph: api.FlameGraphMessage): { left: number; right: number } {
  const root = graph.levels[0] ?? [];
  return { left: root[1] ?? 0, right: root[4] ?? 0 };
}
