// Values in a profile's unit, times in the browser's time zone, and server errors for a person.
import { getValueFormat } from "@grafana/data";

import { ApiError } from "./api";

export function formatValue(value: number, unit: string): string {
  const formatted = getValueFormat(unit)(value, 2);
  return `${formatted.prefix ?? ""}${formatted.text}${formatted.suffix ?? ""}`.trim();
}

export function formatDuration(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  for (const [size, name] of units) {
    if (ms >= size) {
      const count = Math.round((ms / size) * 10) / 10;
      return `${count} ${name}${count === 1 ? "" : "s"}`;
    }
  }
  return `${ms} ms`;
}

/** `2026-12-01 23:40:05` in the browser's time zone. */
export function formatTime(ms: number): string {
  const date = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(
    date.getMinutes(),
  )}:${pad(date.getSeconds())}`;
}

/** The value of an `<input type="datetime-local">` for `ms`, in the browser's time zone. */
export function toLocalInput(ms: number): string {
  return formatTime(ms).replace(" ", "T");
}

export function fromLocalInput(value: string): number {
  return new Date(value).getTime();
}

/** What went wrong, said for a person: the server's limit messages are in ms, we say days. */
export function explain(error: unknown): string {
  if (error instanceof ApiError) {
    const tooLong = /the query covers (\d+) ms, more than tenant (.+)'s max_query_length of (\d+) ms/.exec(error.message);
    if (tooLong) {
      return `The query covers ${formatDuration(Number(tooLong[1]))}, more than tenant ${tooLong[2]}'s limit of ${formatDuration(
        Number(tooLong[3]),
      )} (max_query_length). Pick a shorter time range.`;
    }
    if (error.status === 401 || error.status === 403) {
      return `The server refused the credentials (${error.message}). Enter an API token for this tenant above.`;
    }
    if (error.status === 503) return `The server is busy or its storage is unreachable: ${error.message}. Try again shortly.`;
    if (error.status === 504) return `The query took too long: ${error.message}. Narrow the time range or the filters.`;
    return `The server refused the query: ${error.message}`;
  }
  if (error instanceof TypeError) return `The server could not be reached (${error.message}). Is pyrite serve running?`;
  return String(error);
}
