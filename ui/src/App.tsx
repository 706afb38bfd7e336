// The page: query bar, then the services landing view, one window's flame graph, or the
// comparison of two windows. State lives in the URL (state.ts); data comes from querier.v1.
import { useEffect, useMemo, useState } from "react";

import * as api from "./api";
import { explain, formatDuration, formatTime } from "./format";
import { useLoad } from "./hooks";
import { grafanaUnit } from "./flamegraph";
import { QueryBar } from "./components/QueryBar";
import { ServicesView } from "./components/ServicesView";
import { FlameView } from "./components/FlameView";
import { DiffView } from "./components/DiffView";
import { readState, resolveTime, writeState, type ViewState } from "./state";

const CPU_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/** CPU time when the tenant has it, else the first nanoseconds type, else the first type. */
export function defaultType(types: api.ProfileType[]): api.ProfileType | undefined {
  return (
    types.find((type) => type.ID === CPU_TYPE) ??
    types.find((type) => type.sampleUnit === "nanoseconds") ??
    types[0]
  );
}

export function App() {
  const [state, setState] = useState<ViewState>(() => readState(window.location.search));
  const [token, setToken] = useState(() => sessionStorage.getItem("pyrite.token") ?? "");
  const [refreshes, setRefreshes] = useState(0);

  // Relative times ("now-1h") are resolved when they change and on every refresh.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const now = useMemo(() => Date.now(), [state.from, state.until, refreshes]);
  const start = resolveTime(state.from, now);
  const end = resolveTime(state.until, now);
  const windowError = Number.isNaN(start) || Number.isNaN(end)
    ? `The time range "${state.from}" to "${state.until}" is not a time: use now, now-15m, now-7d or a date.`
    : start >= end
      ? `The time range starts (${formatTime(start)}) after it ends (${formatTime(end)}).`
      : null;

  // A navigation (view, tenant, service) is a history entry; refinements replace the entry.
  useEffect(() => {
    const url = writeState(state);
    if (url === window.location.search) return;
    const previous = readState(window.location.search);
    const navigation =
      previous.view !== state.view || previous.tenant !== state.tenant || previous.service !== state.service;
    if (navigation) window.history.pushState(null, "", url);
    else window.history.replaceState(null, "", url);
    if (state.tenant) localStorage.setItem("pyrite.tenant", state.tenant);
  }, [state]);
  useEffect(() => {
    const restore = () => setState(readState(window.location.search));
    window.addEventListener("popstate", restore);
    return () => window.removeEventListener("popstate", restore);
  }, []);

  const update = (patch: Partial<ViewState>) => setState((current) => ({ ...current, ...patch }));
  const credentials: api.Credentials = { tenant: state.tenant, token };
  const credentialKey = `${state.tenant}\u0000${token}`;

  const types = useLoad(windowError ? null : `${credentialKey}|${start}|${end}`, (signal) =>
    api.profileTypes(credentials, start, end, signal),
  );
  const typeList = types.status === "done" ? types.value : [];
  const profileType = typeList.find((type) => type.ID === state.type);

  // A type the tenant does not have (a new tenant, an old link) falls back to the default one.
  useEffect(() => {
    if (types.status !== "done" || profileType) return;
    const fallback = defaultType(types.value);
    if (fallback && fallback.ID !== state.type) update({ type: fallback.ID });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [types, profileType]);

  const unit = profileType ? grafanaUnit(profileType.sampleUnit) : "short";
  const query = { start, end, credentials, credentialKey, profileType, unit, refreshes };

  let body: JSX.Element;
  if (windowError) {
    body = <p className="message error">{windowError}</p>;
  } else if (types.status === "error") {
    body = <p className="message error">{explain(types.error)}</p>;
  } else if (types.status !== "done") {
    body = <p className="message loading">Loading the profile types of tenant {state.tenant || "anonymous"}…</p>;
  } else if (typeList.length === 0) {
    body = (
      <p className="message empty" data-testid="no-data">
        Tenant {state.tenant || "anonymous"} has no profiles between {formatTime(start)} and {formatTime(end)} (
        {formatDuration(end - start)}). Push some (pyrite push, an agent, or a scrape job) or pick a longer time range.
      </p>
    );
  } else if (!profileType) {
    body = <p className="message loading">Choosing a profile type…</p>;
  } else if (state.view === "services") {
    body = (
      <ServicesView
        {...query}
        profileType={profileType}
        onOpen={(service) => update({ view: "flame", service })}
      />
    );
  } else if (state.view === "diff") {
    body = <DiffView {...query} profileType={profileType} state={state} update={update} />;
  } else {
    body = <FlameView {...query} profileType={profileType} state={state} update={update} />;
  }

  return (
    <div className="app">
      <QueryBar
        state={state}
        update={update}
        token={token}
        setToken={(value) => {
          setToken(value);
          sessionStorage.setItem("pyrite.token", value);
        }}
        types={typeList}
        typesLoading={types.status === "loading"}
        credentials={credentials}
        credentialKey={credentialKey}
        start={start}
        end={end}
        windowValid={!windowError}
        onRefresh={() => setRefreshes((count) => count + 1)}
      />
      <main>{body}</main>
    </div>
  );
}
