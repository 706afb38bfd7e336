// SVG, pprof and folded downloads of what is on screen, through /api/v1/render (and
// /api/v1/render-diff for a comparison), each named after the service and the window.
import { useState } from "react";

import * as api from "../api";
import { explain } from "../format";

export interface ExportWindow {
  type: string;
  selector: string;
  service: string;
  from: number;
  /** Inclusive, as querier.v1's `end`; /api/v1/render's `until` is exclusive. */
  end: number;
  baseline?: { from: number; end: number };
}

function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

export function Exports({ credentials, window: view }: { credentials: api.Credentials; window: ExportWindow }) {
  const [error, setError] = useState<string | null>(null);
  const name = `${(view.service || "all-services").replace(/[^A-Za-z0-9._-]+/g, "_")}_${stamp(view.from)}-${stamp(view.end)}`;
  const formats: { format: string; label: string; extension: string }[] = [
    { format: "svg", label: "SVG", extension: "svg" },
    { format: "pprof", label: "pprof", extension: "pb.gz" },
    { format: "folded", label: "folded", extension: "folded.txt" },
  ];
  const run = async (format: string, extension: string) => {
    setError(null);
    const params = new URLSearchParams({
      query: view.selector,
      type: view.type,
      from: String(view.from),
      until: String(view.end + 1),
      format,
    });
    // A comparison exports its diff where the server has one (SVG, folded), the comparison
    // window's profile otherwise (pprof has no two-sided form).
    let path = "/api/v1/render";
    let filename = `${name}.${extension}`;
    if (view.baseline && format !== "pprof") {
      path = "/api/v1/render-diff";
      params.set("baseline_from", String(view.baseline.from));
      params.set("baseline_until", String(view.baseline.end + 1));
      filename = `${name}_vs_${stamp(view.baseline.from)}-${stamp(view.baseline.end)}.${extension}`;
    }
    try {
      await api.download(credentials, `${path}?${params}`, filename);
    } catch (err) {
      setError(explain(err));
    }
  };
  return (
    <span className="exports" data-testid="exports">
      Export
      {formats.map(({ format, label, extension }) => (
        <button key={format} data-testid={`export-${format}`} onClick={() => void run(format, extension)}>
          {label}
        </button>
      ))}
      {error && <span className="error">{error}</span>}
    </span>
  );
}
