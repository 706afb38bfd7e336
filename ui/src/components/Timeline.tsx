// The SelectSeries time series of the current query, with a value axis in the profile's unit.
// Dragging across it picks a window: the selection snaps to whole points, and the window it
// gives is exactly the rows those points sum (point T holds the profiles in (T − step, T]).
import { useRef, useState } from "react";

import { formatTime, formatValue } from "../format";

export interface TimelineProps {
  /** [timestamp ms, value] of every non-empty point, ascending. */
  points: [number, number][];
  start: number;
  end: number;
  stepMs: number;
  unit: string;
  /** The window currently shown, inclusive ms, highlighted. */
  selection?: { from: number; until: number };
  color: string;
  testId: string;
  title: string;
  onSelect: (from: number, until: number) => void;
}

const WIDTH = 1000;
const HEIGHT = 110;
const LEFT = 70;
const BOTTOM = 20;

export function Timeline(props: TimelineProps) {
  const { points, start, end, stepMs, unit, selection, color } = props;
  const svg = useRef<SVGSVGElement>(null);
  const [drag, setDrag] = useState<{ from: number; to: number } | null>(null);
  const span = Math.max(1, end - start);
  const max = Math.max(0, ...points.map(([, value]) => value));
  const x = (t: number) => LEFT + ((t - start) / span) * (WIDTH - LEFT);
  const y = (v: number) => (max > 0 ? HEIGHT - BOTTOM - (v / max) * (HEIGHT - BOTTOM - 8) : HEIGHT - BOTTOM);
  const timeAt = (clientX: number) => {
    const box = svg.current!.getBoundingClientRect();
    const fraction = ((clientX - box.left) / box.width) * WIDTH;
    return start + ((fraction - LEFT) / (WIDTH - LEFT)) * span;
  };
  // Bars, one per point, ending at the point's time: the point sums the step before it.
  const barWidth = Math.max(1, (stepMs / span) * (WIDTH - LEFT) - 1);
  const ticks = Array.from({ length: 6 }, (_, i) => start + (span * i) / 5);
  const finish = (from: number, to: number) => {
    const [a, b] = from <= to ? [from, to] : [to, from];
    // Points sit at start + k·step; the selection takes the points inside it (at least one).
    const lastPoint = Math.floor((end - start) / stepMs);
    const clamp = (k: number) => Math.min(lastPoint, Math.max(0, k));
    const first = clamp(Math.ceil((a - start) / stepMs));
    const last = Math.max(first, clamp(Math.floor((b - start) / stepMs)));
    props.onSelect(start + first * stepMs - stepMs + 1, start + last * stepMs);
  };
  const dragged = drag && Math.abs(x(drag.to) - x(drag.from)) > 2 ? drag : null;
  return (
    <div className="timeline" data-testid={props.testId}>
      <div className="timeline-title">{props.title}</div>
      <svg
        ref={svg}
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        preserveAspectRatio="none"
        data-points={JSON.stringify(points)}
        data-start={start}
        data-end={end}
        data-step={stepMs}
        onMouseDown={(event) => {
          const t = timeAt(event.clientX);
          setDrag({ from: t, to: t });
        }}
        onMouseMove={(event) => drag && setDrag({ ...drag, to: timeAt(event.clientX) })}
        onMouseUp={(event) => {
          if (!drag) return;
          const to = timeAt(event.clientX);
          setDrag(null);
          if (Math.abs(x(to) - x(drag.from)) > 2) finish(drag.from, to);
        }}
        onMouseLeave={() => setDrag(null)}
      >
        <line x1={LEFT} x2={WIDTH} y1={HEIGHT - BOTTOM} y2={HEIGHT - BOTTOM} className="axis" />
        <text x={LEFT - 6} y={12} className="axis-label" textAnchor="end">
          {formatValue(max, unit)}
        </text>
        <text x={LEFT - 6} y={HEIGHT - BOTTOM} className="axis-label" textAnchor="end">
          0
        </text>
        {ticks.map((t) => (
          <text key={t} x={x(t)} y={HEIGHT - 5} className="axis-label" textAnchor="middle">
            {formatTime(t).slice(11, 16)}
          </text>
        ))}
        {selection && (
          <rect
            className="selection"
            x={x(selection.from)}
            width={Math.max(2, x(selection.until) - x(selection.from))}
            y={0}
            height={HEIGHT - BOTTOM}
            fill={color}
            fillOpacity={0.18}
          />
        )}
        {points.map(([t, value]) => (
          <rect key={t} x={x(t) - barWidth} y={y(value)} width={barWidth} height={HEIGHT - BOTTOM - y(value)} fill={color}>
            <title>{`${formatTime(t)}: ${formatValue(value, unit)}`}</title>
          </rect>
        ))}
        {dragged && (
          <rect
            x={Math.min(x(dragged.from), x(dragged.to))}
            width={Math.abs(x(dragged.to) - x(dragged.from))}
            y={0}
            height={HEIGHT - BOTTOM}
            className="dragging"
          />
        )}
      </svg>
      <div className="timeline-unit">per {formatValue(stepMs / 1000, "s")} step</div>
    </div>
  );
}
