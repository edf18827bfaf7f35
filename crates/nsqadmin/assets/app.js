// nsqadmin UI: one small vanilla-JS app. Every page reads the JSON API under <base>/api/ and
// builds the DOM with textContent only (no HTML from data).
(function () {
  "use strict";
  var BASE = (window.NSQADMIN && window.NSQADMIN.basePath) || "";
  var app = document.getElementById("app");

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "class") e.className = attrs[k];
        else if (k === "onclick") e.addEventListener("click", attrs[k]);
        else e.setAttribute(k, attrs[k]);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function link(href, text) { return el("a", { href: BASE + href, text: text }); }
  function enc(s) { return encodeURIComponent(s); }
  function fmt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : String(n); }
  function num(v) { return el("td", { class: "num", text: fmt(v) }); }
  function th(text, isNum) { return el("th", { class: isNum ? "num" : "", text: text }); }
  function table(headers, rows) {
    var tr = el("tr");
    headers.forEach(function (h) { tr.appendChild(th(h[0], h[1])); });
    var tbody = el("tbody");
    rows.forEach(function (r) { tbody.appendChild(r); });
    return el("div", { class: "scroll" }, el("table", null, el("thead", null, tr), tbody));
  }
  function errorRow(ncols, e) {
    return el("tr", { class: "error" }, el("td", { colspan: String(ncols), text: "⚠ " + e.node + " — " + e.error }));
  }
  function paused(p) { return p ? el("span", { class: "badge paused", text: "paused" }) : null; }
  function duration(ns) {
    var s = Math.floor(ns / 1e9), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + (s % 60) + "s";
  }

  // End-to-end processing latency (nsqd --e2e-processing-latency-percentile): one column per
  // quantile, showing Go nsqadmin's figure (the average over nodes; min and max on hover).
  function nanoToHuman(v) {
    if (v > 1e9) return (v / 1e9).toFixed(1) + "s";
    if (v > 1e6) return (v / 1e6).toFixed(1) + "ms";
    if (v > 1e3) return (v / 1e3).toFixed(1) + "us";
    return v.toFixed(1) + "ns";
  }
  function e2eQuantiles(lat) {
    return lat && lat.percentiles ? lat.percentiles.map(function (p) { return p.quantile; }) : [];
  }
  function e2eHeaders(qs) {
    return qs.map(function (q) { return ["e2e p" + String(Math.round(q * 10000) / 100), 1]; });
  }
  function withE2e(tr, lat, qs) {
    var ps = (lat && lat.percentiles) || [];
    qs.forEach(function (q) {
      var p = ps.filter(function (x) { return x.quantile === q; })[0];
      tr.appendChild(p
        ? el("td", { class: "num e2e", title: "p" + (q * 100) + ": min = " + nanoToHuman(p.min) + ", max = " + nanoToHuman(p.max), text: nanoToHuman(p.average) })
        : el("td", { class: "num muted", text: "–" }));
    });
    return tr;
  }

  // Small inline SVG line chart of points[i][key] (null values are gaps drawn as 0).
  var SVGNS = "http://www.w3.org/2000/svg";
  function sparkline(points, key, label) {
    var w = 160, h = 32, pad = 2;
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(h));
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("data-metric", key);
    var vals = points.map(function (p) { return p[key] === null || p[key] === undefined ? 0 : p[key]; });
    if (key === "rate" && vals.length) vals = vals.slice(1);
    var title = document.createElementNS(SVGNS, "title");
    title.textContent = label + (vals.length ? " (last " + vals.length + " samples)" : ": collecting samples…");
    svg.appendChild(title);
    if (vals.length < 2) {
      var t = document.createElementNS(SVGNS, "text");
      t.setAttribute("x", "4"); t.setAttribute("y", String(h / 2 + 4)); t.setAttribute("class", "spark-empty");
      t.textContent = "collecting…";
      svg.appendChild(t);
      return svg;
    }
    var max = Math.max.apply(null, vals), min = 0;
    if (max <= min) max = min + 1;
    var step = (w - 2 * pad) / (vals.length - 1);
    var pts = vals.map(function (v, i) {
      var x = pad + i * step, y = h - pad - (v - min) / (max - min) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var area = document.createElementNS(SVGNS, "polygon");
    area.setAttribute("points", pad + "," + (h - pad) + " " + pts.join(" ") + " " + (w - pad) + "," + (h - pad));
    area.setAttribute("class", "spark-area");
    svg.appendChild(area);
    var line = document.createElementNS(SVGNS, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("class", "spark-line");
    svg.appendChild(line);
    return svg;
  }
  function fmtRate(r) {
    if (r === null || r === undefined) return "–";
    return r >= 100 ? Math.round(r).toLocaleString("en-US") : r.toFixed(r >= 10 ? 1 : 2);
  }
  function lastRate(points) {
    for (var i = points.length - 1; i >= 0; i--) if (points[i].rate !== null && points[i].rate !== undefined) return points[i].rate;
    return null;
  }
  function chartBox(label, value, svg) {
    return el("div", { class: "chart" }, el("div", { class: "chart-label", text: label }),
      el("div", { class: "chart-value", text: value }), svg);
  }
  // The sampler's charts for a series, or a note that the sampler is off.
  function charts(points, withInFlight) {
    if (!window.NSQADMIN.sampleMs) return el("div", { class: "muted", text: "Rate charts are off (--stats-sample-interval=0)." });
    var last = points.length ? points[points.length - 1] : null;
    var box = el("div", { class: "charts" },
      chartBox("Messages/s", fmtRate(lastRate(points)), sparkline(points, "rate", "messages/s")),
      chartBox("Depth", last ? fmt(last.depth) : "–", sparkline(points, "depth", "depth")));
    if (withInFlight) box.appendChild(chartBox("In-Flight", last ? fmt(last.in_flight_count) : "–", sparkline(points, "in_flight_count", "in flight")));
    var every = (window.NSQADMIN.sampleMs / 1000) + "s";
    box.appendChild(el("div", { class: "muted chart-note", text: window.NSQADMIN.chartSource === "prometheus"
      ? "from Prometheus, one point every " + every : "sampled by nsqadmin every " + every }));
    return box;
  }
  function history(path) {
    if (!window.NSQADMIN.sampleMs) return Promise.resolve({ samples: [], channels: {} });
    return api("GET", "/history" + path).catch(function () { return { samples: [], channels: {} }; });
  }

  function api(method, path, body) {
    var opts = { method: method, headers: { "Accept": "application/json" } };
    if (body) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    return fetch(BASE + "/api" + path, opts).then(function (r) {
      return r.text().then(function (t) {
        var j; try { j = JSON.parse(t); } catch (e) { j = { message: t }; }
        if (!r.ok) { var err = new Error(j.message || ("HTTP " + r.status)); err.status = r.status; throw err; }
        return j;
      });
    });
  }
  function render(nodes) {
    app.textContent = "";
    nodes.forEach(function (n) { if (n) app.appendChild(n); });
  }
  function warning(j) { return j && j.message ? el("div", { class: "alert warn", text: j.message }) : null; }
  function fail(e) { render([el("div", { class: "alert err", text: e.message })]); }

  // nsq-rs delivery policies (nsqd's /topic/config, /channel/config): the current one and a
  // JSON editor whose body is merged into it on every node (null clears a field).
  function policyPanel(path, obj, keys) {
    var current = obj.config || {};
    var out = el("pre", { class: "policy", text: JSON.stringify(current, null, 1) });
    var input = el("textarea", { class: "policy-edit", rows: "2", cols: "60", "aria-label": "policy JSON",
      placeholder: "e.g. " + keys });
    var status = el("div", { class: "policy-status muted" });
    var apply = el("button", {
      text: "Apply policy",
      onclick: function () {
        var cfg;
        try { cfg = JSON.parse(input.value || "{}"); } catch (e) { status.textContent = "Not JSON: " + e.message; return; }
        api("POST", path, { action: "config", config: cfg }).then(function (j) {
          if (j.message) window.alert(j.message);
          route();
        }).catch(function (e) { status.textContent = "Error: " + e.message; status.className = "policy-status alert err"; });
      }
    });
    return el("div", { class: "policy-panel" },
      el("h2", { text: "Policy" }),
      obj.config_differs ? el("div", { class: "alert warn", text: "The nodes' policies differ; this is the first node's." }) : null,
      out, input, " ", apply, status);
  }

  // nsq-rs replicated topics: what the serving node (the leader) reports of the Raft group.
  function replicationPanel(r) {
    if (!r) return null;
    var lag = Object.keys(r.lag || {}).map(function (id) { return "node " + id + ": " + r.lag[id]; }).join(", ");
    return el("div", { class: "replication-panel" },
      el("h2", { text: "Replication" }),
      table([["Leader"], ["Members"], ["Term", 1], ["Log index", 1], ["Applied", 1], ["Followers behind (entries)"], ["Messages kept", 1]],
        [el("tr", null, el("td", { text: r.leader == null ? "none" : "node " + r.leader }),
          el("td", { text: (r.members || []).map(function (m) { return "node " + m; }).join(", ") }),
          num(r.term), num(r.log_index), num(r.applied_index), el("td", { text: lag || "-" }), num(r.messages))]));
  }

  function actionButtons(path, isPaused, what) {
    function act(action, label, verb) {
      return el("button", {
        class: action === "delete" || action === "empty" ? "danger" : "",
        text: label,
        onclick: function () {
          if (!window.confirm("Are you sure you want to " + verb + " " + what + "?")) return;
          var p = action === "delete" ? api("DELETE", path) : api("POST", path, { action: action });
          p.then(function (j) {
            if (j.message) window.alert(j.message);
            if (action === "delete") {
              var parts = path.split("/");
              window.location.href = BASE + (parts.length > 3 ? "/topics/" + parts[2] : "/topics");
            } else route();
          }).catch(function (e) { window.alert("Error: " + e.message); });
        }
      });
    }
    return el("div", { class: "actions" },
      isPaused ? act("unpause", "Unpause", "unpause") : act("pause", "Pause", "pause"),
      act("empty", "Empty", "empty"),
      act("delete", "Delete", "delete"));
  }

  function topicsPage() {
    var ratesP = window.NSQADMIN.sampleMs ? api("GET", "/rates").catch(function () { return { topics: {} }; }) : Promise.resolve({ topics: {} });
    Promise.all([api("GET", "/topics"), ratesP]).then(function (res) {
      var j = res[0], rates = res[1].topics || {};
      var filter = el("input", { type: "search", placeholder: "Filter topics…", "aria-label": "filter" });
      var list = el("tbody");
      function fill() {
        list.textContent = "";
        var q = filter.value.toLowerCase();
        j.topics.filter(function (t) { return t.toLowerCase().indexOf(q) >= 0; }).forEach(function (t) {
          var r = rates[t];
          list.appendChild(el("tr", null, el("td", null, link("/topics/" + enc(t), t)),
            el("td", { class: "num rate", text: r ? fmtRate(r.rate) : "–" }),
            el("td", { class: "num", text: r ? fmt(r.depth) : "–" }),
            el("td", { class: "num", text: r ? fmt(r.message_count) : "–" })));
        });
      }
      filter.addEventListener("input", fill);
      fill();
      render([el("h1", { text: "Topics" }), warning(j), el("div", { class: "muted", text: j.topics.length + " topics" }),
        createForm(), filter,
        el("table", null, el("thead", null, el("tr", null, th("Topic"), th("Messages/s", 1), th("Depth", 1), th("Messages", 1))), list)]);
    }).catch(fail);
  }

  function topicPage(topic) {
    Promise.all([api("GET", "/topics/" + enc(topic)), history("/" + enc(topic))]).then(function (res) {
      var t = res[0], hist = res[1];
      var qs = e2eQuantiles(t.e2e_processing_latency);
      var nodeRows = t.nodes.map(function (n) {
        var tomb = el("button", {
          class: "danger small", text: "Tombstone",
          onclick: function () {
            if (!window.confirm("Tombstone topic " + topic + " on " + n.node + "? It will be deleted from that node.")) return;
            api("DELETE", "/nodes/" + enc(n.node), { topic: topic }).then(function (j) {
              if (j.message) window.alert(j.message);
              route();
            }).catch(function (e) { window.alert("Error: " + e.message); });
          }
        });
        return withE2e(el("tr", null, el("td", null, link("/nodes/" + enc(n.node), n.hostname), " ", el("span", { class: "muted", text: n.node }), " ", paused(n.paused)),
          num(n.depth), num(n.memory_depth), num(n.backend_depth), num(n.message_count), num(n.channels.length), el("td", null, tomb)), n.e2e_processing_latency, qs);
      });
      (t.node_errors || []).forEach(function (e) { nodeRows.push(errorRow(7 + qs.length, e)); });
      nodeRows.push(withE2e(el("tr", { class: "total" }, el("td", { text: "Total" }), num(t.depth), num(t.memory_depth),
        num(t.backend_depth), num(t.message_count), num(t.channels.length), el("td")), t.e2e_processing_latency, qs));
      var chRows = t.channels.map(function (c) {
        var pts = (hist.channels || {})[c.channel_name] || [];
        return withE2e(el("tr", null, el("td", null, link("/topics/" + enc(topic) + "/" + enc(c.channel_name), c.channel_name), " ", paused(c.paused)),
          num(c.depth), num(c.memory_depth), num(c.backend_depth), num(c.in_flight_count), num(c.deferred_count),
          num(c.requeue_count), num(c.timeout_count), num(c.message_count), num(c.client_count),
          el("td", { class: "num rate", text: fmtRate(lastRate(pts)) }), el("td", { class: "sparkcell" }, window.NSQADMIN.sampleMs ? sparkline(pts, "rate", "messages/s") : null)),
          c.e2e_processing_latency, qs);
      });
      if (!chRows.length) chRows.push(el("tr", null, el("td", { colspan: String(12 + qs.length), class: "muted", text: "No channels" })));
      render([
        el("div", { class: "crumbs" }, link("/topics", "Topics"), " / "),
        el("h1", null, topic, " ", paused(t.paused)),
        warning(t),
        actionButtons("/topics/" + enc(topic), t.paused, "topic " + topic),
        charts(hist.samples || [], false),
        policyPanel("/topics/" + enc(topic), t, '{"ttl":"1h","max_depth":1000000}'),
        replicationPanel(t.replication),
        el("h2", { text: "Nodes" }),
        table([["nsqd host"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["Messages", 1], ["Channels", 1], [""]].concat(e2eHeaders(qs)), nodeRows),
        el("h2", { text: "Channels" }),
        table([["Channel"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["In-Flight", 1], ["Deferred", 1], ["Requeued", 1],
          ["Timed Out", 1], ["Messages", 1], ["Connections", 1], ["Messages/s", 1], ["Rate"]].concat(e2eHeaders(qs)), chRows)
      ]);
    }).catch(fail);
  }

  function channelPage(topic, channel) {
    var path = "/" + enc(topic) + "/" + enc(channel);
    Promise.all([api("GET", "/topics" + path), history(path)]).then(function (res) {
      var c = res[0], hist = res[1];
      var qs = e2eQuantiles(c.e2e_processing_latency);
      var nodeRows = c.nodes.map(function (n) {
        return withE2e(el("tr", null, el("td", null, n.hostname + " ", el("span", { class: "muted", text: n.node }), " ", paused(n.paused)),
          num(n.depth), num(n.memory_depth), num(n.backend_depth), num(n.in_flight_count), num(n.deferred_count),
          num(n.requeue_count), num(n.timeout_count), num(n.message_count), num(n.client_count)), n.e2e_processing_latency, qs);
      });
      (c.node_errors || []).forEach(function (e) { nodeRows.push(errorRow(10 + qs.length, e)); });
      nodeRows.push(withE2e(el("tr", { class: "total" }, el("td", { text: "Total" }), num(c.depth), num(c.memory_depth),
        num(c.backend_depth), num(c.in_flight_count), num(c.deferred_count), num(c.requeue_count),
        num(c.timeout_count), num(c.message_count), num(c.client_count)), c.e2e_processing_latency, qs));
      var clientRows = c.clients.map(function (cl) {
        var attrs = [];
        if (cl.tls) attrs.push("TLS");
        if (cl.authed) attrs.push("AUTH");
        if (cl.deflate) attrs.push("deflate");
        if (cl.snappy) attrs.push("snappy");
        if (cl.topology_zone) attrs.push("zone " + cl.topology_zone);
        return el("tr", null, el("td", { text: cl.hostname + " (" + cl.remote_address + ")" }),
          el("td", { text: cl.version + (cl.user_agent ? " " + cl.user_agent : "") }), el("td", { text: attrs.join(", ") }),
          el("td", { text: cl.node }), num(cl.in_flight_count), num(cl.ready_count), num(cl.finish_count),
          num(cl.requeue_count), num(cl.message_count), el("td", { class: "num", text: duration(cl.connected) }));
      });
      if (!clientRows.length) clientRows.push(el("tr", null, el("td", { colspan: "10", class: "muted", text: "No clients connected" })));
      render([
        el("div", { class: "crumbs" }, link("/topics", "Topics"), " / ", link("/topics/" + enc(topic), topic), " / "),
        el("h1", null, channel, " ", paused(c.paused)),
        warning(c),
        actionButtons("/topics/" + enc(topic) + "/" + enc(channel), c.paused, "channel " + channel),
        charts(hist.samples || [], true),
        policyPanel("/topics/" + enc(topic) + "/" + enc(channel), c, '{"max_attempts":5,"dead_letter_topic":"' + topic + '.dead"}'),
        el("h2", { text: "Nodes" }),
        table([["nsqd host"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["In-Flight", 1], ["Deferred", 1], ["Requeued", 1],
          ["Timed Out", 1], ["Messages", 1], ["Connections", 1]].concat(e2eHeaders(qs)), nodeRows),
        el("h2", { text: "Clients" }),
        table([["Client host"], ["Protocol / user agent"], ["Attributes"], ["nsqd host"], ["In-Flight", 1], ["Ready", 1],
          ["Finished", 1], ["Requeued", 1], ["Messages", 1], ["Connected", 1]], clientRows)
      ]);
    }).catch(fail);
  }

  function nodesPage() {
    api("GET", "/nodes").then(function (j) {
      var errs = {};
      (j.node_errors || []).forEach(function (e) { errs[e.node] = e; });
      var rows = [];
      j.nodes.forEach(function (n) {
        var addr = (n.broadcast_address.indexOf(":") >= 0 ? "[" + n.broadcast_address + "]" : n.broadcast_address) + ":" + n.http_port;
        var err = errs[addr];
        delete errs[addr];
        var topics = el("td", { style: "white-space: normal" });
        n.topics.forEach(function (t, i) {
          if (i) topics.appendChild(document.createTextNode(" "));
          topics.appendChild(link("/topics/" + enc(t.topic), t.topic));
          if (t.tombstoned) topics.appendChild(el("span", { class: "badge tomb", text: "tombstoned" }));
        });
        rows.push(el("tr", { class: err ? "error" : "" },
          el("td", null, link("/nodes/" + enc(addr), n.hostname), err ? el("span", { class: "badge tomb", text: "unreachable", title: err.error }) : null),
          el("td", { text: n.broadcast_address }),
          el("td", { class: "num", text: String(n.tcp_port) }), el("td", { class: "num", text: String(n.http_port) }),
          el("td", null, n.version, n.out_of_date ? el("span", { class: "badge tomb", text: "out of date" }) : null), topics));
      });
      Object.keys(errs).forEach(function (k) { rows.push(errorRow(6, errs[k])); });
      if (!rows.length) rows.push(el("tr", null, el("td", { colspan: "6", class: "muted", text: "No nodes" })));
      render([el("h1", { text: "Nodes" }), warning(j),
        table([["Hostname"], ["Broadcast address"], ["TCP port", 1], ["HTTP port", 1], ["Version"], ["Topics"]], rows)]);
    }).catch(fail);
  }

  function nodePage(node) {
    api("GET", "/nodes/" + enc(node)).then(function (j) {
      var rows = [];
      j.topics.forEach(function (t) {
        rows.push(el("tr", { class: "total" }, el("td", null, link("/topics/" + enc(t.topic_name), t.topic_name), " ", paused(t.paused)),
          num(t.depth), num(t.memory_depth), num(t.backend_depth), el("td"), el("td"), num(t.message_count),
          num(t.channels.reduce(function (a, c) { return a + c.client_count; }, 0))));
        t.channels.forEach(function (c) {
          rows.push(el("tr", null, el("td", null, "\u00a0\u00a0\u00a0",
            link("/topics/" + enc(t.topic_name) + "/" + enc(c.channel_name), c.channel_name), " ", paused(c.paused)),
            num(c.depth), num(c.memory_depth), num(c.backend_depth), num(c.in_flight_count), num(c.deferred_count),
            num(c.message_count), num(c.client_count)));
        });
      });
      (j.node_errors || []).forEach(function (e) { rows.push(errorRow(8, e)); });
      if (!rows.length) rows.push(el("tr", null, el("td", { colspan: "8", class: "muted", text: "No topics" })));
      render([
        el("div", { class: "crumbs" }, link("/nodes", "Nodes"), " / "),
        el("h1", { text: node }), warning(j),
        el("div", { class: "muted", text: fmt(j.total_messages) + " messages, " + fmt(j.total_clients) + " clients" }),
        el("h2", { text: "Topics and channels" }),
        table([["Topic / channel"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["In-Flight", 1], ["Deferred", 1],
          ["Messages", 1], ["Connections", 1]], rows)
      ]);
    }).catch(fail);
  }

  var counterTimer = null;
  // Live total of messages processed by every channel on every node (Go's /counter).
  function counterPage() {
    var total = el("div", { class: "counter", id: "counter", text: "…" });
    var rate = el("div", { class: "counter-rate muted", text: "" });
    var detail = el("div", { class: "muted" });
    var warn = el("div");
    var last = null;
    render([el("h1", { text: "Messages processed" }), warn, total, rate, detail]);
    function poll() {
      api("GET", "/counter").then(function (j) {
        var sum = 0, channels = 0, nodes = {};
        Object.keys(j.stats).forEach(function (k) { var s = j.stats[k]; sum += s.message_count; channels++; nodes[s.node] = 1; });
        var now = Date.now();
        if (last && now > last.t) rate.textContent = fmtRate(Math.max(0, sum - last.sum) * 1000 / (now - last.t)) + " messages/s";
        last = { t: now, sum: sum };
        total.textContent = fmt(sum);
        total.setAttribute("data-count", String(sum));
        detail.textContent = channels + " channels on " + Object.keys(nodes).length + " nodes, polled every 2s";
        warn.textContent = "";
        if (j.message) warn.appendChild(warning(j));
      }).catch(function (e) { warn.textContent = ""; warn.appendChild(el("div", { class: "alert err", text: e.message })); });
    }
    poll();
    counterTimer = window.setInterval(poll, 2000);
  }

  // The lookupds, the topics and channels they know that no nsqd produces, and a form to
  // create a topic/channel on them (Go's /lookup).
  function lookupPage() {
    var lookupds = window.NSQADMIN.lookupd || [];
    var head = [el("h1", { text: "Lookup" })];
    if (!lookupds.length) {
      render(head.concat([el("div", { class: "alert warn", text: "nsqadmin reads nsqds directly (--nsqd-http-address): there is no nsqlookupd to show." })]));
      return;
    }
    var list = el("ul", { class: "lookupds" });
    lookupds.forEach(function (a) { list.appendChild(el("li", null, el("code", { text: a }))); });
    api("GET", "/topics?inactive=true").then(function (j) {
      var names = Object.keys(j.topics).sort();
      var rows = [];
      function del(path, what) {
        return el("button", { class: "danger small", text: "Delete", onclick: function () {
          if (!window.confirm("Delete " + what + " from the lookupds?")) return;
          api("DELETE", path).then(function () { route(); }).catch(function (e) { window.alert("Error: " + e.message); });
        } });
      }
      names.forEach(function (t) {
        rows.push(el("tr", { class: "total" }, el("td", { text: t }), el("td", null, del("/topics/" + enc(t), "topic " + t))));
        j.topics[t].forEach(function (c) {
          rows.push(el("tr", null, el("td", { text: "\u00a0\u00a0\u00a0" + c }), el("td", null, del("/topics/" + enc(t) + "/" + enc(c), "channel " + t + "/" + c))));
        });
      });
      if (!rows.length) rows.push(el("tr", null, el("td", { colspan: "2", class: "muted", text: "No inactive topics" })));
      render(head.concat([warning(j), el("h2", { text: "nsqlookupd" }), list,
        el("h2", { text: "Inactive topics and channels" }),
        el("div", { class: "muted", text: "Known to a lookupd, produced by no nsqd." }),
        table([["Topic / channel"], [""]], rows),
        el("h2", { text: "Create a topic / channel" }),
        createForm(function () { route(); })]));
    }).catch(fail);
  }

  function createForm(onDone) {
    var topic = el("input", { type: "text", placeholder: "topic", "aria-label": "topic" });
    var channel = el("input", { type: "text", placeholder: "channel (optional)", "aria-label": "channel" });
    var form = el("form", { class: "create" }, topic, channel, el("button", { type: "submit", text: "Create" }));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!topic.value) return;
      api("POST", "/topics", { topic: topic.value, channel: channel.value }).then(function (j) {
        if (j.message) window.alert(j.message);
        if (onDone) return onDone(topic.value);
        // With lookupds, a new topic is inactive (no nsqd produces it yet): show it there.
        window.location.href = BASE + (window.NSQADMIN.lookupd.length ? "/lookup" : "/topics/" + enc(topic.value));
      }).catch(function (e) { window.alert("Error: " + e.message); });
    });
    return form;
  }

  function route() {
    var path = window.location.pathname;
    if (BASE && path.indexOf(BASE) === 0) path = path.slice(BASE.length);
    var parts = path.split("/").filter(function (p) { return p.length; }).map(decodeURIComponent);
    if (counterTimer) { window.clearInterval(counterTimer); counterTimer = null; }
    document.querySelectorAll("header nav a").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("data-nav") === (parts[0] || "topics"));
    });
    if (parts[0] === "counter") { document.title = "nsqadmin - counter"; return counterPage(); }
    if (parts[0] === "lookup") { document.title = "nsqadmin - lookup"; return lookupPage(); }
    if (parts[0] === "nodes" && parts.length === 2) { document.title = "nsqadmin - " + parts[1]; return nodePage(parts[1]); }
    if (parts[0] === "nodes") { document.title = "nsqadmin - nodes"; return nodesPage(); }
    if (parts[0] === "topics" && parts.length === 2) { document.title = "nsqadmin - " + parts[1]; return topicPage(parts[1]); }
    if (parts[0] === "topics" && parts.length === 3) { document.title = "nsqadmin - " + parts[1] + "/" + parts[2]; return channelPage(parts[1], parts[2]); }
    document.title = "nsqadmin - topics";
    return topicsPage();
  }
  route();
})();
