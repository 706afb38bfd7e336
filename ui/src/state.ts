// The whole view lives in the URL's query string, so a pasted link reproduces it. Times are
// Grafana-style strings: `now`, `now-15m`, or absolute milliseconds since the epoch.

export type View = "services" | "flame" | "diff";
export type Operator = "=" | "!=" | "=~" | "!~";

export interface LabelFilter {
  name: string;
  op: Operator;
  value: string;
}

export interface ViewState {
  tenant: string;
  view: View;
  type: string;
  service: string;
  filters: LabelFilter[];
  from: string;
  until: string;
  /** Baseline and comparison windows of the diff view. */
  leftFrom: string;
  leftUntil: string;
  rightFrom: string;
  rightUntil: string;
  search: string;
}

export const PRESETS: { label: string; from: string }[] = [
  { label: "5m", from: "now-5m" },
  { label: "15m", from: "now-15m" },
  { label: "1h", from: "now-1h" },
  { label: "6h", from: "now-6h" },
  { label: "24h", from: "now-24h" },
  { label: "7d", from: "now-7d" },
];

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** A time string at `now`, in ms; NaN when it is neither `now[-N<unit>]` nor a number. */
export function resolveTime(text: string, now: number): number {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const relative = /^now(?:-(\d+)([smhdw]))?$/.exec(trimmed);
  if (!relative) return NaN;
  return relative[1] ? now - Number(relative[1]) * UNIT_MS[relative[2]] : now;
}

const FILTER = /^([A-Za-z_][A-Za-z0-9_.]*)(=~|!~|!=|=)(.*)$/;

function parseFilter(text: string): LabelFilter | null {
  const match = FILTER.exec(text);
  return match ? { name: match[1], op: match[2] as Operator, value: match[3] } : null;
}

export function defaultState(): ViewState {
  return {
    tenant: "",
    view: "services",
    type: "",
    service: "",
    filters: [],
    from: "now-1h",
    until: "now",
    leftFrom: "",
    leftUntil: "",
    rightFrom: "",
    rightUntil: "",
    search: "",
  };
}

export function readState(search: string): ViewState {
  const params = new URLSearchParams(search);
  const state = defaultState();
  const text = (name: string, fallback: string) => params.get(name) ?? fallback;
  state.tenant = text("tenant", localStorage.getItem("pyrite.tenant") ?? "");
  const view = params.get("view");
  state.view = view === "flame" || view === "diff" ? view : "services";
  state.type = text("type", "");
  state.service = text("service", "");
  state.filters = params.getAll("label").map(parseFilter).filter((f): f is LabelFilter => f !== null);
  state.from = text("from", state.from);
  state.until = text("until", state.until);
  state.leftFrom = text("left_from", "");
  state.leftUntil = text("left_until", "");
  state.rightFrom = text("right_from", "");
  state.rightUntil = text("right_until", "");
  state.search = text("search", "");
  return state;
}

export function writeState(state: ViewState): string {
  const params = new URLSearchParams();
  if (state.tenant) params.set("tenant", state.tenant);
  params.set("view", state.view);
  if (state.type) params.set("type", state.type);
  if (state.service) params.set("service", state.service);
  for (const filter of state.filters) params.append("label", `${filter.name}${filter.op}${filter.value}`);
  params.set("from", state.from);
  params.set("until", state.until);
  if (state.view === "diff") {
    for (const [name, value] of [
      ["left_from", state.leftFrom],
      ["left_until", state.leftUntil],
      ["right_from", state.rightFrom],
      ["right_until", state.rightUntil],
    ]) {
      if (value) params.set(name, value);
    }
  }
  if (state.search) params.set("search", state.search);
  return `?${params.toString()}`;
}

/** The Prometheus selector of the service and filters (JSON string quoting is PromQL's). */
export function selector(state: Pick<ViewState, "service" | "filters">, extra: LabelFilter[] = []): string {
  const matchers: string[] = [];
  if (state.service) matchers.push(`service_name=${JSON.stringify(state.service)}`);
  for (const filter of [...state.filters, ...extra]) {
    matchers.push(`${filter.name}${filter.op}${JSON.stringify(filter.value)}`);
  }
  return `{${matchers.join(", ")}}`;
}
