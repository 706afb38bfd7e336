// The querier.v1 connect API in its JSON form (what Grafana's Profiles Drilldown speaks), and
// /api/v1/render for exports. Tenant goes in X-Scope-OrgID; an optional token as a bearer.
// Numbers that are int64 in the proto arrive as strings (proto3 JSON), hence the Number()s.

export interface Credentials {
  tenant: string;
  token: string;
}

/** A failed call, with the server's own message and the connect code (or HTTP status). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
  ) {
    super(message);
  }
}

function headers(credentials: Credentials, json: boolean): HeadersInit {
  const result: Record<string, string> = {};
  if (json) result["Content-Type"] = "application/json";
  if (credentials.tenant) result["X-Scope-OrgID"] = credentials.tenant;
  if (credentials.token) result["Authorization"] = `Bearer ${credentials.token}`;
  return result;
}

async function failure(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as { code?: string; message?: string };
    return new ApiError(body.message || text, body.code || String(response.status), response.status);
  } catch {
    return new ApiError(text || response.statusText, String(response.status), response.status);
  }
}

async function call<T>(credentials: Credentials, method: string, body: unknown, signal?: AbortSignal): Promise<T> {
  const response = await fetch(`/querier.v1.QuerierService/${method}`, {
    method: "POST",
    headers: headers(credentials, true),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export interface ProfileType {
  ID: string;
  name: string;
  sampleType: string;
  sampleUnit: string;
  periodType: string;
  periodUnit: string;
}

export async function profileTypes(c: Credentials, start: number, end: number, signal?: AbortSignal) {
  const response = await call<{ profileTypes?: ProfileType[] }>(c, "ProfileTypes", { start, end }, signal);
  return response.profileTypes ?? [];
}

export async function labelNames(c: Credentials, selector: string, start: number, end: number, signal?: AbortSignal) {
  const response = await call<{ names?: string[] }>(c, "LabelNames", { matchers: [selector], start, end }, signal);
  return response.names ?? [];
}

export async function labelValues(
  c: Credentials,
  name: string,
  selector: string,
  start: number,
  end: number,
  signal?: AbortSignal,
) {
  const response = await call<{ names?: string[] }>(c, "LabelValues", { name, matchers: [selector], start, end }, signal);
  return response.names ?? [];
}

/** The FlameGraph message: `levels[i].values` are groups of 4 (or 7 for a diff), delta-encoded. */
export interface FlameGraphMessage {
  names: string[];
  levels: number[][];
  total: number;
  maxSelf: number;
  /** A FlameGraphDiff (groups of 7: left x, total, self, right x, total, self, name). */
  diff: boolean;
}

interface RawFlameGraph {
  names?: string[];
  levels?: { values?: (string | number)[] }[];
  total?: string | number;
  maxSelf?: string | number;
}

function flameGraph(raw: RawFlameGraph | undefined, diff: boolean): FlameGraphMessage {
  return {
    names: raw?.names ?? ["total"],
    levels: (raw?.levels ?? []).map((level) => (level.values ?? []).map(Number)),
    total: Number(raw?.total ?? 0),
    maxSelf: Number(raw?.maxSelf ?? 0),
    diff,
  };
}

export interface MergeQuery {
  profileTypeID: string;
  labelSelector: string;
  start: number;
  end: number;
  maxNodes?: number;
}

export async function selectMergeStacktraces(c: Credentials, query: MergeQuery, signal?: AbortSignal) {
  const response = await call<{ flamegraph?: RawFlameGraph }>(c, "SelectMergeStacktraces", query, signal);
  return flameGraph(response.flamegraph, false);
}

export async function diff(c: Credentials, left: MergeQuery, right: MergeQuery, signal?: AbortSignal) {
  const response = await call<{ flamegraph?: RawFlameGraph }>(c, "Diff", { left, right }, signal);
  return flameGraph(response.flamegraph, true);
}

export interface Series {
  labels: Record<string, string>;
  points: { timestamp: number; value: number }[];
}

export async function selectSeries(
  c: Credentials,
  query: { profileTypeID: string; labelSelector: string; start: number; end: number; step: number; groupBy?: string[] },
  signal?: AbortSignal,
): Promise<Series[]> {
  const response = await call<{
    series?: { labels?: { name: string; value: string }[]; points?: { value?: number; timestamp?: string | number }[] }[];
  }>(c, "SelectSeries", query, signal);
  return (response.series ?? []).map((series) => ({
    labels: Object.fromEntries((series.labels ?? []).map((pair) => [pair.name, pair.value])),
    points: (series.points ?? []).map((point) => ({ timestamp: Number(point.timestamp), value: Number(point.value ?? 0) })),
  }));
}

/** Downloads `url` with the credentials' headers as a file named `filename`. */
export async function download(c: Credentials, url: string, filename: string) {
  const response = await fetch(url, { headers: headers(c, false) });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const objectUrl = URL.createObjectURL(blob);
  const anchor = document.createElement("a");
  anchor.href = objectUrl;
  anchor.download = filename;
  document.body.appendChild(anchor);
  anchor.click();
  anchor.remove();
  // The click has started the download; the object URL may go once the browser has read it.
  setTimeout(() => URL.revokeObjectURL(objectUrl), 10_000);
}
