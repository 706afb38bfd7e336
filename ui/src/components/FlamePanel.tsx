// Grafana's flame graph component (top table and flame graph side by side, search, sandwich,
// focus, collapsing, colour schemes, tooltips in the profile's unit) over one querier.v1 result,
// plus what the component does not show: the share of the total the search matches.
import { useEffect, useMemo, useRef, useState } from "react";
import { createTheme } from "@grafana/data";
import { FlameGraph } from "@grafana/flamegraph";
import uFuzzy from "@leeoniya/ufuzzy";

import type { FlameGraphMessage } from "../api";
import { formatValue } from "../format";
import { flameGraphFrame, matchedShare } from "../flamegraph";

const theme = createTheme({ colors: { mode: "dark" } });
const getTheme = () => theme;
const fuzzy = new uFuzzy();
const percent = (share: number) => `${(share * 100).toFixed(2)}%`;

/** The labels the component highlights for `search`: its own rule (regex per term, else fuzzy). */
export function searchLabels(search: string, labels: string[]): Set<string> {
  const found = new Set<string>();
  for (const term of search.split(",")) {
    if (!term) continue;
    let matched = false;
    try {
      const regex = new RegExp(term);
      for (const label of labels) {
        if (regex.test(label)) {
          found.add(label);
          matched = true;
        }
      }
    } catch {
      // Not a regular expression: the fuzzy match below decides.
    }
    if (!matched) for (const index of fuzzy.filter(labels, term) ?? []) found.add(labels[index]);
  }
  return found;
}

interface Props {
  graph: FlameGraphMessage;
  unit: string;
  search: string;
  onSearch: (search: string) => void;
  extraHeaderElements?: React.ReactNode;
}

export function FlamePanel({ graph, unit, search, onSearch, extraHeaderElements }: Props) {
  const frame = useMemo(() => {
    // Marks for the render benchmark (tests/ui/bench.mjs): data in hand → first paint.
    performance.mark("pyrite:flame-data");
    return flameGraphFrame(graph, unit);
  }, [graph, unit]);
  useEffect(() => {
    if (!frame) return;
    // The frame after the component's canvas was drawn (it draws in a layout effect).
    const id = requestAnimationFrame(() => performance.mark("pyrite:flame-painted"));
    return () => cancelAnimationFrame(id);
  }, [frame]);
  const container = useRef<HTMLDivElement>(null);
  const [typed, setTyped] = useState(search);
  const share = useMemo(
    () => (typed ? matchedShare(graph, searchLabels(typed, graph.names)) : null),
    [graph, typed],
  );

  // The component keeps its search box to itself: follow its input events, and put the URL's
  // search into it once it exists (as typing would, so the component highlights it too).
  useEffect(() => {
    const root = container.current;
    if (!root) return;
    const input = () => root.querySelector<HTMLInputElement>('input[placeholder="Search..."]');
    const box = input();
    if (box && search && box.value !== search) {
      Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value")!.set!.call(box, search);
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
    let timer: number | undefined;
    // Read once the component's own handler has run: a re-render of ours in between would
    // reset its controlled input before it saw the keystroke.
    const follow = () =>
      window.setTimeout(() => {
        const value = input()?.value ?? "";
        setTyped(value);
        window.clearTimeout(timer);
        timer = window.setTimeout(() => onSearch(value), 400);
      }, 0);
    // The clear button (×) empties the box without an input event.
    root.addEventListener("input", follow);
    root.addEventListener("click", follow);
    return () => {
      root.removeEventListener("input", follow);
      root.removeEventListener("click", follow);
      window.clearTimeout(timer);
    };
    // Only when a new graph (and so possibly a new component) is mounted.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [frame]);

  if (!frame) return null;
  return (
    <div className="flame-panel" ref={container} data-testid="flame-panel" data-nodes={frame.nodes}>
      <div className="match-share" data-testid="match-share" hidden={!typed}>
        {share &&
          (share.value + share.valueRight === 0
            ? `No function matches “${typed}”`
            : graph.diff
              ? `“${typed}” matches ${percent(share.share)} of the baseline (${formatValue(share.value, unit)}) and ${percent(
                  share.shareRight,
                )} of the comparison (${formatValue(share.valueRight, unit)})`
              : `“${typed}” matches ${percent(share.share)} of the total (${formatValue(share.value, unit)})`)}
      </div>
      <FlameGraph data={frame.frame} getTheme={getTheme} extraHeaderElements={extraHeaderElements} showAnalyzeWithAssistant={false} />
    </div>
  );
}
