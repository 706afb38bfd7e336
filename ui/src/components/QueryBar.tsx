// Tenant, view, profile type, service, label filters and time range: every list is loaded for
// the current tenant, so switching tenant empties them until the new tenant's lists arrive.
import { useEffect, useState } from "react";

import * as api from "../api";
import { fromLocalInput, toLocalInput } from "../format";
import { useLoad } from "../hooks";
import { PRESETS, selector, type LabelFilter, type Operator, type ViewState } from "../state";

interface Props {
  state: ViewState;
  update: (patch: Partial<ViewState>) => void;
  token: string;
  setToken: (token: string) => void;
  types: api.ProfileType[];
  typesLoading: boolean;
  credentials: api.Credentials;
  credentialKey: string;
  start: number;
  end: number;
  windowValid: boolean;
  onRefresh: () => void;
}

const OPERATORS: Operator[] = ["=", "!=", "=~", "!~"];

function recentTenants(): string[] {
  try {
    return JSON.parse(localStorage.getItem("pyrite.recentTenants") ?? "[]") as string[];
  } catch {
    return [];
  }
}

function rememberTenant(tenant: string) {
  const recent = [tenant, ...recentTenants().filter((t) => t !== tenant)].slice(0, 10);
  localStorage.setItem("pyrite.recentTenants", JSON.stringify(recent));
}

export function QueryBar(props: Props) {
  const { state, update, credentials, credentialKey, start, end, windowValid } = props;
  const [tenantDraft, setTenantDraft] = useState(state.tenant);
  useEffect(() => setTenantDraft(state.tenant), [state.tenant]);
  const commitTenant = () => {
    const tenant = tenantDraft.trim();
    if (tenant === state.tenant) return;
    if (tenant) rememberTenant(tenant);
    // Nothing of the previous tenant's survives: its service, type and filters mean nothing here.
    update({ tenant, type: "", service: "", filters: [], search: "" });
  };

  const typeSelector = state.type ? `{__profile_type__=${JSON.stringify(state.type)}}` : "{}";
  const listKey = windowValid && state.type ? `${credentialKey}|${state.type}|${start}|${end}` : null;
  const services = useLoad(listKey, (signal) =>
    api.labelValues(credentials, "service_name", typeSelector, start, end, signal),
  );
  const labelNames = useLoad(listKey && `${listKey}|${state.service}`, (signal) =>
    api.labelNames(credentials, selector(state), start, end, signal),
  );
  const [draft, setDraft] = useState<LabelFilter>({ name: "", op: "=", value: "" });
  const labelValues = useLoad(listKey && draft.name ? `${listKey}|${state.service}|${draft.name}` : null, (signal) =>
    api.labelValues(credentials, draft.name, selector(state), start, end, signal),
  );
  const serviceList = services.status === "done" ? services.value : [];
  const nameList = (labelNames.status === "done" ? labelNames.value : []).filter(
    (name) => !name.startsWith("__") && name !== "service_name",
  );

  // Profile types grouped by profile name ("process_cpu", "memory"), each with its unit.
  const groups = new Map<string, api.ProfileType[]>();
  for (const type of props.types) groups.set(type.name, [...(groups.get(type.name) ?? []), type]);

  return (
    <header className="query-bar">
      <div className="row">
        <span className="brand">Pyrite</span>
        <nav className="views">
          {(
            [
              ["services", "Services"],
              ["flame", "Flame graph"],
              ["diff", "Comparison"],
            ] as const
          ).map(([view, label]) => (
            <button
              key={view}
              data-testid={`view-${view}`}
              className={state.view === view ? "active" : ""}
              onClick={() => update({ view })}
            >
              {label}
            </button>
          ))}
        </nav>
        <label>
          Tenant
          <input
            id="tenant"
            data-testid="tenant"
            list="recent-tenants"
            value={tenantDraft}
            placeholder="anonymous"
            onChange={(event) => setTenantDraft(event.target.value)}
            onBlur={commitTenant}
            onKeyDown={(event) => event.key === "Enter" && commitTenant()}
          />
          <datalist id="recent-tenants">
            {recentTenants().map((tenant) => (
              <option key={tenant} value={tenant} />
            ))}
          </datalist>
        </label>
        <label title="Sent as a bearer token when the server has auth.tokens_file set">
          Token
          <input
            type="password"
            data-testid="token"
            value={props.token}
            placeholder="none"
            autoComplete="off"
            onChange={(event) => props.setToken(event.target.value)}
          />
        </label>
      </div>
      <div className="row">
        <label>
          Profile type
          <select
            data-testid="profile-type"
            value={state.type}
            onChange={(event) => update({ type: event.target.value })}
            disabled={props.types.length === 0}
          >
            {props.types.length === 0 && <option value="">{props.typesLoading ? "loading…" : "none"}</option>}
            {[...groups].map(([name, types]) => (
              <optgroup key={name} label={name}>
                {types.map((type) => (
                  <option key={type.ID} value={type.ID}>
                    {name} · {type.sampleType} ({type.sampleUnit})
                  </option>
                ))}
              </optgroup>
            ))}
          </select>
        </label>
        <label>
          Service
          <select
            data-testid="service"
            value={state.service}
            onChange={(event) => update({ service: event.target.value })}
          >
            <option value="">{services.status === "loading" ? "loading…" : "all services"}</option>
            {state.service && !serviceList.includes(state.service) && services.status !== "done" && (
              <option value={state.service}>{state.service}</option>
            )}
            {serviceList.map((service) => (
              <option key={service} value={service}>
                {service}
              </option>
            ))}
          </select>
        </label>
        <div className="filters" data-testid="filters">
          {state.filters.map((filter, index) => (
            <span className="chip" key={`${filter.name}${filter.op}${filter.value}`}>
              {filter.name} {filter.op} "{filter.value}"
              <button
                aria-label={`Remove filter ${filter.name}`}
                onClick={() => update({ filters: state.filters.filter((_, i) => i !== index) })}
              >
                ×
              </button>
            </span>
          ))}
          <form
            className="add-filter"
            onSubmit={(event) => {
              event.preventDefault();
              if (!draft.name) return;
              update({ filters: [...state.filters, draft] });
              setDraft({ name: "", op: "=", value: "" });
            }}
          >
            <input
              data-testid="filter-name"
              list="label-names"
              placeholder="label"
              value={draft.name}
              onChange={(event) => setDraft({ ...draft, name: event.target.value })}
            />
            <datalist id="label-names">
              {nameList.map((name) => (
                <option key={name} value={name} />
              ))}
            </datalist>
            <select
              aria-label="operator"
              value={draft.op}
              onChange={(event) => setDraft({ ...draft, op: event.target.value as Operator })}
            >
              {OPERATORS.map((op) => (
                <option key={op} value={op}>
                  {op}
                </option>
              ))}
            </select>
            <input
              data-testid="filter-value"
              list="label-values"
              placeholder="value"
              value={draft.value}
              onChange={(event) => setDraft({ ...draft, value: event.target.value })}
            />
            <datalist id="label-values">
              {(labelValues.status === "done" ? labelValues.value : []).map((value) => (
                <option key={value} value={value} />
              ))}
            </datalist>
            <button type="submit" disabled={!draft.name}>
              Add filter
            </button>
          </form>
        </div>
      </div>
      <div className="row">
        <span className="presets">
          Last
          {PRESETS.map((preset) => (
            <button
              key={preset.from}
              data-testid={`preset-${preset.label}`}
              className={state.from === preset.from && state.until === "now" ? "active" : ""}
              onClick={() => update({ from: preset.from, until: "now", leftFrom: "", leftUntil: "", rightFrom: "", rightUntil: "" })}
            >
              {preset.label}
            </button>
          ))}
        </span>
        <label>
          From
          <input
            type="datetime-local"
            step={1}
            data-testid="from"
            value={windowValid ? toLocalInput(start) : ""}
            onChange={(event) => {
              const ms = fromLocalInput(event.target.value);
              if (!Number.isNaN(ms)) update({ from: String(ms) });
            }}
          />
        </label>
        <label>
          To
          <input
            type="datetime-local"
            step={1}
            data-testid="until"
            value={windowValid ? toLocalInput(end) : ""}
            onChange={(event) => {
              const ms = fromLocalInput(event.target.value);
              if (!Number.isNaN(ms)) update({ until: String(ms) });
            }}
          />
        </label>
        <span className="zone">{Intl.DateTimeFormat().resolvedOptions().timeZone}</span>
        <button data-testid="refresh" onClick={props.onRefresh}>
          Refresh
        </button>
      </div>
    </header>
  );
}
