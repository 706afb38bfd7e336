// querier.v1 flame graphs → the nested-set data frame @grafana/flamegraph draws, the way
// Grafana's Pyroscope data source builds it (levels → tree → depth-first rows of level, value,
// self, label). A diff carries valueRight/selfRight too: `value`/`self` are the left (baseline)
// side and the component normalises each side by its own total for colours and percentages.
import { createDataFrame, FieldType, type DataFrame } from "@grafana/data";

import type { FlameGraphMessage } from "./api";

interface Node {
  start: number;
  width: number;
  total: number;
  self: number;
  totalRight: number;
  selfRight: number;
  name: number;
  children: Node[];
}

/** Decodes the delta-encoded levels (groups of 4, or 7 for a diff) into a tree; null if empty. */
export function levelsToTree(graph: FlameGraphMessage): Node | null {
  const isDiff = graph.diff;
  const group = isDiff ? 7 : 4;
  let parents: Node[] = [];
  let root: Node | null = null;
  for (const values of graph.levels) {
    const nodes: Node[] = [];
    let end = 0;
    let endRight = 0;
    for (let i = 0; i + group <= values.length; i += group) {
      const node: Node = isDiff
        ? {
            start: 0,
            width: 0,
            total: values[i + 1],
            self: values[i + 2],
            totalRight: values[i + 4],
            selfRight: values[i + 5],
            name: values[i + 6],
            children: [],
          }
        : { start: 0, width: 0, total: values[i + 1], self: values[i + 2], totalRight: 0, selfRight: 0, name: values[i + 3], children: [] };
      // Each side's x is a gap after the previous node's right edge on this level.
      const x = values[i] + end;
      end = x + node.total;
      let xRight = 0;
      if (isDiff) {
        xRight = values[i + 3] + endRight;
        endRight = xRight + node.totalRight;
      }
      // Both sides lay out the same tree, so their sum is a layout of it as well.
      node.start = x + xRight;
      node.width = node.total + node.totalRight;
      nodes.push(node);
    }
    if (!root) {
      root = nodes[0] ?? null;
    } else {
      let p = 0;
      for (const node of nodes) {
        while (p < parents.length - 1 && parents[p].start + parents[p].width <= node.start) p++;
        parents[p]?.children.push(node);
      }
    }
    parents = nodes;
  }
  if (!root || root.width === 0) return null;
  return root;
}

/** Grafana's unit for a profile type's sample unit (the 3rd part of its ID). */
export function grafanaUnit(sampleUnit: string): string {
  switch (sampleUnit) {
    case "nanoseconds":
      return "ns";
    case "microseconds":
      return "µs";
    case "milliseconds":
      return "ms";
    case "seconds":
      return "s";
    case "bytes":
      return "bytes";
    case "count":
    case "":
      return "short";
    default:
      return sampleUnit;
  }
}

export interface FlameFrame {
  frame: DataFrame;
  /** Node count, for the benchmark and the page's own status line. */
  nodes: number;
  total: number;
  totalRight: number;
}

/** The data frame of `graph` in `unit` (a Grafana unit), or null when it holds no samples. */
export function flameGraphFrame(graph: FlameGraphMessage, unit: string): FlameFrame | null {
  const root = levelsToTree(graph);
  if (!root) return null;
  const isDiff = graph.diff;
  const level: number[] = [];
  const value: number[] = [];
  const self: number[] = [];
  const label: number[] = [];
  const valueRight: number[] = [];
  const selfRight: number[] = [];
  const stack: [Node, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    level.push(depth);
    value.push(node.total);
    self.push(node.self);
    label.push(node.name);
    valueRight.push(node.totalRight);
    selfRight.push(node.selfRight);
    for (let i = node.children.length - 1; i >= 0; i--) stack.push([node.children[i], depth + 1]);
  }
  const fields = [
    { name: "level", type: FieldType.number, values: level },
    { name: "value", type: FieldType.number, values: value, config: { unit } },
    { name: "self", type: FieldType.number, values: self, config: { unit } },
    { name: "label", type: FieldType.enum, values: label, config: { type: { enum: { text: graph.names } } } },
  ];
  if (isDiff) {
    fields.push(
      { name: "valueRight", type: FieldType.number, values: valueRight, config: { unit } },
      { name: "selfRight", type: FieldType.number, values: selfRight, config: { unit } },
    );
  }
  return {
    frame: createDataFrame({ name: "response", meta: { preferredVisualisationType: "flamegraph" }, fields }),
    nodes: level.length,
    total: root.total,
    totalRight: root.totalRight,
  };
}

/** What the functions in `labels` hold, counting nested matches once: for a diff, per side. */
export function matchedShare(
  graph: FlameGraphMessage,
  labels: Set<string>,
): { value: number; share: number; valueRight: number; shareRight: number } {
  const root = levelsToTree(graph);
  const result = { value: 0, share: 0, valueRight: 0, shareRight: 0 };
  if (!root || labels.size === 0) return result;
  const stack: Node[] = [root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node !== root && labels.has(graph.names[node.name])) {
      result.value += node.total;
      result.valueRight += node.totalRight;
      continue;
    }
    stack.push(...node.children);
  }
  result.share = root.total > 0 ? result.value / root.total : 0;
  result.shareRight = root.totalRight > 0 ? result.valueRight / root.totalRight : 0;
  return result;
}
