// The Marconi operator console.
//
// It reads the node's public JSON API with the project (and token) typed
// into the page, so it sees what the API lets that project see and nothing
// else.  Every string it shows is user data and goes into the page as text
// (textContent, createTextNode, setAttribute): never as HTML.
"use strict";

(() => {
  const POLL_MS = 2000;
  const HEALTH_POLL_MS = 5000;
  const QUEUES_PER_PAGE = 20;
  const MESSAGES_PER_PAGE = 10;
  const CLAIMS_SHOWN = 10;
  const BODY_CHARS = 200;
  const HISTORY = 60;
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    project: "",
    token: "",
    clientId: newClientId(),
    timer: null,
    generation: 0,
    queueMarkers: [],
    messageMarkers: [],
    messagesOf: null,
    latency: [],
  };

  function newClientId() {
    if (window.crypto && crypto.randomUUID) {
      return crypto.randomUUID();
    }
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Building the page: text only.

  function append(node, child) {
    if (child === null || child === undefined || child === false) {
      return;
    }
    if (Array.isArray(child)) {
      child.forEach((c) => append(node, c));
    } else if (child instanceof Node) {
      node.appendChild(child);
    } else {
      node.appendChild(document.createTextNode(String(child)));
    }
  }

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, String(value));
    }
    children.forEach((c) => append(node, c));
    return node;
  }

  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG, tag), attrs, children);
  }

  function queueLink(name) {
    return el("a", { href: "#/queue/" + encodeURIComponent(name) }, name);
  }

  function table(headings, rows, attrs) {
    return el(
      "table",
      attrs || {},
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    );
  }

  function number(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) {
      return "—";
    }
    const s = Math.max(0, Math.round(number(seconds)));
    if (s < 120) {
      return s + " s";
    }
    if (s < 7200) {
      return Math.round(s / 60) + " min";
    }
    return (s / 3600).toFixed(1) + " h";
  }

  function millis(seconds) {
    return (number(seconds) * 1000).toFixed(1) + " ms";
  }

  // Sparklines: plain SVG polylines of numbers.

  function sparkline(values, what, kind) {
    const points = values.map(number);
    const width = 120;
    const height = 24;
    const peak = Math.max(1, ...points);
    const step = points.length > 1 ? width / (points.length - 1) : width;
    const coords = points
      .map((v, i) => {
        const x = (i * step).toFixed(1);
        const y = (height - 2 - (v / peak) * (height - 4)).toFixed(1);
        return x + "," + y;
      })
      .join(" ");
    const total = points.reduce((a, b) => a + b, 0);
    return svg(
      "svg",
      {
        class: "spark " + kind,
        width: width,
        height: height,
        viewBox: `0 0 ${width} ${height}`,
        role: "img",
      },
      svg("title", {}, `${what}: ${total} in the window, peak ${peak} per bucket`),
      svg("polyline", { points: coords }),
    );
  }

  function perMinute(series, bucketSeconds) {
    const buckets = Math.max(1, Math.round(60 / number(bucketSeconds || 10)));
    return series.slice(-buckets).reduce((a, b) => a + number(b), 0);
  }

  function rate(activity, kind, label) {
    if (!activity || !activity.series || !activity.series[kind]) {
      return el("td", { class: "rate " + kind }, "—");
    }
    const series = activity.series[kind];
    return el(
      "td",
      { class: "rate " + kind },
      sparkline(series, label, kind),
      el("span", { class: "per-minute" }, perMinute(series, activity.bucket_seconds) + "/min"),
    );
  }

  // The API.

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, allowed) {
    const headers = {
      Accept: "application/json",
      "Client-ID": state.clientId,
    };
    if (state.project) {
      headers["X-Project-ID"] = state.project;
    }
    if (state.token) {
      headers["X-Auth-Token"] = state.token;
    }
    const response = await fetch(path, {
      headers: headers,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
    const text = await response.text();
    let doc = null;
    if (text) {
      try {
        doc = JSON.parse(text);
      } catch (e) {
        doc = null;
      }
    }
    if (!response.ok && !(allowed || []).includes(response.status)) {
      const why = doc && typeof doc.description === "string" ? doc.description : "";
      throw new APIError(response.status, `${path}: ${response.status} ${why}`);
    }
    return doc;
  }

  async function orNull(promise) {
    try {
      return await promise;
    } catch (e) {
      return null;
    }
  }

  function q(name) {
    return "/v2/queues/" + encodeURIComponent(name);
  }

  function activityOf(name) {
    return api("/console/api/queues/" + encodeURIComponent(name) + "/activity");
  }

  function markerOf(links) {
    const next = (links || []).find((l) => l && l.rel === "next");
    if (!next || typeof next.href !== "string") {
      return null;
    }
    return new URL(next.href, location.origin).searchParams.get("marker");
  }

  function pager(markers, next, onChange) {
    const first = el("button", { type: "button", class: "first" }, "First page");
    first.disabled = markers.length === 0;
    first.addEventListener("click", () => {
      markers.length = 0;
      onChange();
    });
    const more = el("button", { type: "button", class: "next" }, "Next page");
    more.disabled = !next;
    more.addEventListener("click", () => {
      markers.push(next);
      onChange();
    });
    return el("div", { class: "pager" }, first, more);
  }

  // Pages.

  async function queuesPage() {
    const markers = state.queueMarkers;
    let path = `/v2/queues?detailed=true&limit=${QUEUES_PER_PAGE}`;
    if (markers.length) {
      path += "&marker=" + encodeURIComponent(markers[markers.length - 1]);
    }
    const doc = (await api(path)) || {};
    const queues = Array.isArray(doc.queues) ? doc.queues : [];
    const rows = await Promise.all(queues.map(queueRow));
    const next = queues.length === QUEUES_PER_PAGE ? markerOf(doc.links) : null;
    return el(
      "section",
      { id: "queues" },
      el("h2", {}, "Queues of ", el("span", { class: "project" }, state.project)),
      queues.length
        ? table(
            [
              "Queue",
              "Free",
              "Claimed",
              "Delayed",
              "Total",
              "Oldest",
              "Posted",
              "Consumed",
              "Dead letters",
            ],
            rows,
            { class: "queues" },
          )
        : el("p", { class: "empty" }, "This project has no queues."),
      pager(markers, next, refresh),
    );
  }

  async function queueRow(queue) {
    const name = String(queue.name);
    const metadata = queue.metadata && typeof queue.metadata === "object" ? queue.metadata : {};
    const dlq = typeof metadata._dead_letter_queue === "string" ? metadata._dead_letter_queue : null;
    const [stats, activity, dead] = await Promise.all([
      orNull(api(q(name) + "/stats")),
      orNull(activityOf(name)),
      dlq ? orNull(api(q(dlq) + "/stats")) : null,
    ]);
    const counts = stats && stats.messages ? stats.messages : null;
    const cell = (kind) => el("td", { class: "num " + kind }, counts ? number(counts[kind]) : "—");
    const oldest = counts && counts.oldest ? counts.oldest.age : null;
    return el(
      "tr",
      { "data-queue": name },
      el("td", { class: "name" }, queueLink(name)),
      cell("free"),
      cell("claimed"),
      cell("delayed"),
      cell("total"),
      el("td", { class: "num oldest" }, age(oldest)),
      rate(activity, "posted", "messages posted"),
      rate(activity, "deleted", "messages consumed (deleted)"),
      el(
        "td",
        { class: "dead" },
        dlq
          ? [
              el("span", { class: "num" }, dead && dead.messages ? number(dead.messages.total) : 0),
              " in ",
              queueLink(dlq),
            ]
          : "—",
      ),
    );
  }

  async function queuePage(route) {
    const name = route.queue;
    if (state.messagesOf !== name) {
      state.messagesOf = name;
      state.messageMarkers.length = 0;
    }
    const markers = state.messageMarkers;
    let path =
      q(name) +
      `/messages?include_claimed=true&include_delayed=true&echo=true&limit=${MESSAGES_PER_PAGE}`;
    if (markers.length) {
      path += "&marker=" + encodeURIComponent(markers[markers.length - 1]);
    }
    const [stats, metadata, activity, listing] = await Promise.all([
      api(q(name) + "/stats"),
      orNull(api(q(name))),
      orNull(activityOf(name)),
      api(path),
    ]);
    const claims = await Promise.all(
      ((activity && activity.claims) || [])
        .slice(0, CLAIMS_SHOWN)
        .map((c) => orNull(api(q(name) + "/claims/" + encodeURIComponent(c.id)))),
    );
    const messages = listing && Array.isArray(listing.messages) ? listing.messages : [];
    return el(
      "section",
      { id: "queue", "data-queue": name },
      el("p", {}, el("a", { href: "#/queues" }, "← all queues")),
      el("h2", {}, "Queue ", el("span", { class: "queue-name" }, name)),
      depthCards(stats && stats.messages ? stats.messages : {}),
      el(
        "div",
        { class: "rates" },
        ["posted", "claimed", "deleted"].map((kind) =>
          el("div", { class: "rate-card" }, el("h3", {}, kind), rate(activity, kind, "messages " + kind)),
        ),
      ),
      el("h3", {}, "Messages"),
      messages.length
        ? table(["Id", "Age", "TTL", "Tags", "Body"], messages.map(messageRow), { class: "messages" })
        : el("p", { class: "empty" }, "No messages on this page."),
      pager(markers, messages.length === MESSAGES_PER_PAGE ? markerOf(listing.links) : null, refresh),
      el("h3", {}, "Claims"),
      claimsTable(claims.filter((c) => c && c.id && Array.isArray(c.messages) && c.messages.length)),
      el("h3", {}, "Settings"),
      settingsTable(metadata || {}),
    );
  }

  function depthCards(counts) {
    const card = (label, value, kind) =>
      el("div", { class: "card " + kind }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
    return el(
      "div",
      { class: "cards" },
      card("free", number(counts.free), "free"),
      card("claimed", number(counts.claimed), "claimed"),
      card("delayed", number(counts.delayed), "delayed"),
      card("total", number(counts.total), "total"),
      card("oldest", age(counts.oldest ? counts.oldest.age : null), "oldest"),
      card("newest", age(counts.newest ? counts.newest.age : null), "newest"),
    );
  }

  function truncated(body) {
    let text;
    try {
      text = typeof body === "string" ? body : JSON.stringify(body);
    } catch (e) {
      text = String(body);
    }
    if (text === undefined) {
      text = "";
    }
    return text.length > BODY_CHARS ? text.slice(0, BODY_CHARS) + "…" : text;
  }

  function messageRow(m) {
    const tags = Array.isArray(m.tags) ? m.tags : [];
    return el(
      "tr",
      { "data-message": String(m.id) },
      el("td", { class: "id" }, String(m.id)),
      el("td", { class: "num" }, age(m.age)),
      el("td", { class: "num" }, age(m.ttl)),
      el("td", { class: "tags" }, tags.map((t) => el("span", { class: "tag" }, String(t)))),
      el("td", { class: "body" }, el("code", {}, truncated(m.body))),
    );
  }

  function claimsTable(claims) {
    if (!claims.length) {
      return el("p", { class: "empty" }, "No live claims.");
    }
    return table(
      ["Claim", "Age", "TTL", "Messages held"],
      claims.map((c) =>
        el(
          "tr",
          {},
          el("td", { class: "id" }, String(c.id)),
          el("td", { class: "num" }, age(c.age)),
          el("td", { class: "num" }, age(c.ttl)),
          el("td", { class: "num" }, Array.isArray(c.messages) ? c.messages.length : 0),
        ),
      ),
      { class: "claims" },
    );
  }

  function settingsTable(metadata) {
    const names = Object.keys(metadata).sort();
    if (!names.length) {
      return el("p", { class: "empty" }, "No settings.");
    }
    return table(
      ["Setting", "Value"],
      names.map((n) => el("tr", {}, el("td", { class: "id" }, n), el("td", {}, el("code", {}, truncated(metadata[n]))))),
      { class: "settings" },
    );
  }

  const STATE_CLASS = { self: "self", up: "up", down: "down", "stand-in": "standin" };

  function ringPicture(nodes) {
    const size = 220;
    const c = size / 2;
    const r = 80;
    const parts = [];
    let start = -Math.PI / 2;
    nodes.forEach((node) => {
      const share = number(node.share);
      const end = start + share * 2 * Math.PI;
      const kind = "arc " + (STATE_CLASS[node.state] || "unknown");
      if (share >= 0.9999) {
        parts.push(svg("circle", { cx: c, cy: c, r: r, class: kind }));
      } else if (share > 0) {
        // A small gap between neighbours, so that two nodes in the same
        // state still show as two arcs.
        const gap = Math.min(0.02, (end - start) / 4);
        const large = end - start - 2 * gap > Math.PI ? 1 : 0;
        const p = (a) => `${(c + r * Math.cos(a)).toFixed(2)} ${(c + r * Math.sin(a)).toFixed(2)}`;
        parts.push(svg("path", { d: `M ${p(start + gap)} A ${r} ${r} 0 ${large} 1 ${p(end - gap)}`, class: kind }));
      }
      const middle = (start + end) / 2;
      parts.push(
        svg(
          "text",
          {
            x: (c + (r + 22) * Math.cos(middle)).toFixed(1),
            y: (c + (r + 22) * Math.sin(middle)).toFixed(1),
            "text-anchor": "middle",
            "dominant-baseline": "middle",
          },
          String(node.name),
        ),
      );
      start = end;
    });
    return svg(
      "svg",
      { class: "ring", width: size, height: size, viewBox: `0 0 ${size} ${size}`, role: "img" },
      svg("title", {}, "Each node's share of the key space"),
      parts,
    );
  }

  async function clusterPage() {
    const [health, forwarding] = await Promise.all([api("/v2/health", [503]), api("/console/api/node")]);
    const cluster = health && health.cluster;
    if (!cluster || !Array.isArray(cluster.nodes)) {
      return el(
        "section",
        { id: "cluster" },
        el("h2", {}, "Cluster"),
        el("p", { class: "empty" }, "This node runs on its own: it owns every queue."),
      );
    }
    const forwarded = (forwarding && forwarding.forwarded) || {};
    const bucket = forwarding ? forwarding.bucket_seconds : 10;
    const rows = cluster.nodes.map((node) => {
      const name = String(node.name);
      const series = forwarded[name] || [];
      const kind = STATE_CLASS[node.state] || "unknown";
      return el(
        "tr",
        { "data-node": name },
        el("td", { class: "name" }, name),
        el("td", {}, String(node.url || "")),
        el("td", { class: "num" }, (number(node.share) * 100).toFixed(1) + " %"),
        el("td", {}, el("span", { class: "state " + kind }, String(node.state))),
        el("td", {}, node.error ? String(node.error) : ""),
        node.state === "self"
          ? el("td", {}, "—")
          : el(
              "td",
              { class: "rate forwarded" },
              sparkline(series, "requests forwarded to " + name, "forwarded"),
              el("span", { class: "per-minute" }, perMinute(series, bucket) + "/min"),
            ),
      );
    });
    const received = (forwarding && forwarding.received) || [];
    return el(
      "section",
      { id: "cluster" },
      el("h2", {}, "Cluster ring, seen from node ", el("span", { class: "node" }, String(cluster.node))),
      el(
        "div",
        { class: "ring-view" },
        ringPicture(cluster.nodes),
        el(
          "div",
          {},
          table(["Node", "URL", "Share", "State", "Error", "Forwarded to it"], rows, { class: "nodes" }),
          el(
            "p",
            { class: "received" },
            "Requests forwarded to this node by its peers: ",
            sparkline(received, "requests received from peers", "forwarded"),
            " " + perMinute(received, bucket) + "/min",
          ),
        ),
      ),
    );
  }

  async function healthPage() {
    const health = (await api("/v2/health", [503])) || {};
    const steps = health.operation_status && typeof health.operation_status === "object" ? health.operation_status : {};
    const total = Object.values(steps).reduce((a, s) => a + number(s && s.seconds), 0);
    state.latency.push(total);
    if (state.latency.length > HISTORY) {
      state.latency.shift();
    }
    const slowest = Math.max(1e-6, ...Object.values(steps).map((s) => number(s && s.seconds)));
    const stepRows = Object.keys(steps).map((name) => {
      const s = steps[name] || {};
      const width = Math.max(1, Math.round((number(s.seconds) / slowest) * 200));
      return el(
        "tr",
        {},
        el("td", {}, name),
        el("td", { class: "num" }, millis(s.seconds)),
        el(
          "td",
          {},
          svg("svg", { class: "bar", width: 200, height: 12 }, svg("rect", { x: 0, y: 1, width: width, height: 10 })),
        ),
        el("td", {}, s.succeeded ? "ok" : "failed" + (s.ref ? ": " + String(s.ref) : "")),
      );
    });
    const nodes = Array.isArray(health.nodes) ? health.nodes : [];
    const up = health.storage_reachable === true;
    return el(
      "section",
      { id: "health" },
      el("h2", {}, "Node health"),
      el(
        "p",
        { class: "storage " + (up ? "up" : "down") },
        up ? "Storage reachable" : "Storage unreachable",
        health.error ? ": " + String(health.error) : "",
      ),
      el("h3", {}, "Storage latency (a probe message through the store)"),
      table(["Step", "Time", "", "Result"], stepRows, { class: "steps" }),
      el(
        "p",
        {},
        "Whole probe over the last polls: ",
        sparkline(state.latency.map((s) => Math.round(s * 1000)), "probe milliseconds", "latency"),
        " " + millis(total),
      ),
      el("h3", {}, "Nodes"),
      table(
        ["Node", "State"],
        nodes.map((n) =>
          el(
            "tr",
            {},
            el("td", {}, String(n.name) + (n.self ? " (this node)" : "")),
            el("td", {}, el("span", { class: "state " + (STATE_CLASS[n.state] || "unknown") }, String(n.state))),
          ),
        ),
        { class: "nodes" },
      ),
    );
  }

  // Routing and polling.

  function currentRoute() {
    const hash = location.hash.replace(/^#\/?/, "");
    const slash = hash.indexOf("/");
    const head = slash < 0 ? hash : hash.slice(0, slash);
    if (head === "queue" && slash >= 0) {
      try {
        return { page: "queue", queue: decodeURIComponent(hash.slice(slash + 1)) };
      } catch (e) {
        return { page: "queues" };
      }
    }
    if (head === "cluster" || head === "health") {
      return { page: head };
    }
    return { page: "queues" };
  }

  const PAGES = { queues: queuesPage, queue: queuePage, cluster: clusterPage, health: healthPage };

  function setStatus(text, failed) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.className = failed ? "error" : "";
  }

  async function refresh() {
    clearTimeout(state.timer);
    const generation = ++state.generation;
    const route = currentRoute();
    for (const name of ["queues", "cluster", "health"]) {
      const link = document.getElementById("nav-" + name);
      link.className = route.page === name || (name === "queues" && route.page === "queue") ? "current" : "";
    }
    const target = document.getElementById("page");
    if (!state.project && route.page !== "health") {
      target.replaceChildren(el("p", { class: "hint" }, "Type a project (and a token if the node uses Keystone), then Use."));
      setStatus("", false);
      return;
    }
    try {
      const content = await PAGES[route.page](route);
      if (generation !== state.generation) {
        return;
      }
      target.replaceChildren(content);
      setStatus("Updated " + new Date().toLocaleTimeString(), false);
    } catch (e) {
      if (generation !== state.generation) {
        return;
      }
      setStatus(e.message || String(e), true);
    }
    if (generation === state.generation) {
      state.timer = setTimeout(refresh, route.page === "health" ? HEALTH_POLL_MS : POLL_MS);
    }
  }

  function start() {
    const form = document.getElementById("who");
    const project = document.getElementById("project");
    const token = document.getElementById("token");
    state.project = sessionStorage.getItem("marconi.project") || "";
    project.value = state.project;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      state.project = project.value.trim();
      state.token = token.value.trim();
      sessionStorage.setItem("marconi.project", state.project);
      state.queueMarkers.length = 0;
      state.messageMarkers.length = 0;
      refresh();
    });
    window.addEventListener("hashchange", () => {
      state.queueMarkers.length = 0;
      refresh();
    });
    refresh();
  }

  start();
})();
