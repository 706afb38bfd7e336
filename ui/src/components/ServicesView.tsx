// The landing view, as Grafana's Profiles Drilldown opens: every service of the tenant with a
// small time series of the chosen type (CPU by default); a click opens its flame graph.
import * as api from "../api";
import { explain, formatValue } from "../format";
import { stepSeconds, useLoad } from "../hooks";

interface Props {
  start: number;
  end: number;
  credentials: api.Credentials;
  credentialKey: string;
  profileType: api.ProfileType;
  unit: string;
  refreshes: number;
  onOpen: (service: string) => void;
}

const WIDTH = 240;
const HEIGHT = 48;

export function ServicesView(props: Props) {
  const { start, end, profileType, unit } = props;
  const step = stepSeconds(end - start);
  const series = useLoad(`${props.credentialKey}|${profileType.ID}|${start}|${end}|${props.refreshes}`, (signal) =>
    api.selectSeries(
      props.credentials,
      { profileTypeID: profileType.ID, labelSelector: "{}", start, end, step, groupBy: ["service_name"] },
      signal,
    ),
  );
  if (series.status === "error") return <p className="message error">{explain(series.error)}</p>;
  if (series.status !== "done") return <p className="message loading">Loading services…</p>;
  if (series.value.length === 0) {
    return (
      <p className="message empty" data-testid="no-services">
        No service has {profileType.name} {profileType.sampleType} profiles in this time range.
      </p>
    );
  }
  const span = Math.max(1, end - start);
  return (
    <section className="services" data-testid="services">
      <h2>
        Services · {profileType.name} {profileType.sampleType}
      </h2>
      <div className="service-grid">
        {series.value.map((one) => {
          const service = one.labels["service_name"] ?? "";
          const total = one.points.reduce((sum, point) => sum + point.value, 0);
          const max = Math.max(0, ...one.points.map((point) => point.value));
          const path = one.points
            .map((point) => {
              const x = ((point.timestamp - start) / span) * WIDTH;
              const y = HEIGHT - (max > 0 ? (point.value / max) * (HEIGHT - 4) : 0);
              return `${x.toFixed(1)},${y.toFixed(1)}`;
            })
            .join(" ");
          return (
            <button
              key={service}
              className="service-card"
              data-testid="service-card"
              data-service={service}
              onClick={() => props.onOpen(service)}
            >
              <span className="service-name">{service || "(no service_name)"}</span>
              <span className="service-total">{formatValue(total, unit)}</span>
              <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none">
                <polyline points={path} fill="none" stroke="#ff9830" strokeWidth={1.5} />
                {one.points.length === 1 && <circle cx={path.split(",")[0]} cy={path.split(",")[1]} r={2} fill="#ff9830" />}
              </svg>
            </button>
          );
        })}
      </div>
    </section>
  );
}
