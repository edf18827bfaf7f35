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
    api("GET", "/topics").then(function (j) {
      var filter = el("input", { type: "search", placeholder: "Filter topics…", "aria-label": "filter" });
      var list = el("tbody");
      function fill() {
        list.textContent = "";
        var q = filter.value.toLowerCase();
        j.topics.filter(function (t) { return t.toLowerCase().indexOf(q) >= 0; }).forEach(function (t) {
          list.appendChild(el("tr", null, el("td", null, link("/topics/" + enc(t), t))));
        });
      }
      filter.addEventListener("input", fill);
      fill();
      render([el("h1", { text: "Topics" }), warning(j), el("div", { class: "muted", text: j.topics.length + " topics" }),
        createForm(), filter, el("table", null, el("thead", null, el("tr", null, th("Topic"))), list)]);
    }).catch(fail);
  }

  function topicPage(topic) {
    api("GET", "/topics/" + enc(topic)).then(function (t) {
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
        return el("tr", null, el("td", null, link("/nodes/" + enc(n.node), n.hostname), " ", el("span", { class: "muted", text: n.node }), " ", paused(n.paused)),
          num(n.depth), num(n.memory_depth), num(n.backend_depth), num(n.message_count), num(n.channels.length), el("td", null, tomb));
      });
      (t.node_errors || []).forEach(function (e) { nodeRows.push(errorRow(7, e)); });
      nodeRows.push(el("tr", { class: "total" }, el("td", { text: "Total" }), num(t.depth), num(t.memory_depth),
        num(t.backend_depth), num(t.message_count), num(t.channels.length), el("td")));
      var chRows = t.channels.map(function (c) {
        return el("tr", null, el("td", null, link("/topics/" + enc(topic) + "/" + enc(c.channel_name), c.channel_name), " ", paused(c.paused)),
          num(c.depth), num(c.memory_depth), num(c.backend_depth), num(c.in_flight_count), num(c.deferred_count),
          num(c.requeue_count), num(c.timeout_count), num(c.message_count), num(c.client_count));
      });
      if (!chRows.length) chRows.push(el("tr", null, el("td", { colspan: "10", class: "muted", text: "No channels" })));
      render([
        el("div", { class: "crumbs" }, link("/topics", "Topics"), " / "),
        el("h1", null, topic, " ", paused(t.paused)),
        warning(t),
        actionButtons("/topics/" + enc(topic), t.paused, "topic " + topic),
        el("h2", { text: "Nodes" }),
        table([["nsqd host"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["Messages", 1], ["Channels", 1], [""]], nodeRows),
        el("h2", { text: "Channels" }),
        table([["Channel"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["In-Flight", 1], ["Deferred", 1], ["Requeued", 1],
          ["Timed Out", 1], ["Messages", 1], ["Connections", 1]], chRows)
      ]);
    }).catch(fail);
  }

  function channelPage(topic, channel) {
    api("GET", "/topics/" + enc(topic) + "/" + enc(channel)).then(function (c) {
      var nodeRows = c.nodes.map(function (n) {
        return el("tr", null, el("td", null, n.hostname + " ", el("span", { class: "muted", text: n.node }), " ", paused(n.paused)),
          num(n.depth), num(n.memory_depth), num(n.backend_depth), num(n.in_flight_count), num(n.deferred_count),
          num(n.requeue_count), num(n.timeout_count), num(n.message_count), num(n.client_count));
      });
      (c.node_errors || []).forEach(function (e) { nodeRows.push(errorRow(10, e)); });
      nodeRows.push(el("tr", { class: "total" }, el("td", { text: "Total" }), num(c.depth), num(c.memory_depth),
        num(c.backend_depth), num(c.in_flight_count), num(c.deferred_count), num(c.requeue_count),
        num(c.timeout_count), num(c.message_count), num(c.client_count)));
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
        el("h2", { text: "Nodes" }),
        table([["nsqd host"], ["Depth", 1], ["Memory", 1], ["Disk", 1], ["In-Flight", 1], ["Deferred", 1], ["Requeued", 1],
          ["Timed Out", 1], ["Messages", 1], ["Connections", 1]], nodeRows),
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

  function createForm() {
    var topic = el("input", { type: "text", placeholder: "topic", "aria-label": "topic" });
    var channel = el("input", { type: "text", placeholder: "channel (optional)", "aria-label": "channel" });
    var form = el("form", { class: "create" }, topic, channel, el("button", { type: "submit", text: "Create" }));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!topic.value) return;
      api("POST", "/topics", { topic: topic.value, channel: channel.value }).then(function (j) {
        if (j.message) window.alert(j.message);
        window.location.href = BASE + "/topics/" + enc(topic.value);
      }).catch(function (e) { window.alert("Error: " + e.message); });
    });
    return form;
  }

  function route() {
    var path = window.location.pathname;
    if (BASE && path.indexOf(BASE) === 0) path = path.slice(BASE.length);
    var parts = path.split("/").filter(function (p) { return p.length; }).map(decodeURIComponent);
    document.querySelectorAll("header nav a").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("data-nav") === (parts[0] || "topics"));
    });
    if (parts[0] === "nodes" && parts.length === 2) { document.title = "nsqadmin - " + parts[1]; return nodePage(parts[1]); }
    if (parts[0] === "nodes") { document.title = "nsqadmin - nodes"; return nodesPage(); }
    if (parts[0] === "topics" && parts.length === 2) { document.title = "nsqadmin - " + parts[1]; return topicPage(parts[1]); }
    if (parts[0] === "topics" && parts.length === 3) { document.title = "nsqadmin - " + parts[1] + "/" + parts[2]; return channelPage(parts[1], parts[2]); }
    document.title = "nsqadmin - topics";
    return topicsPage();
  }
  route();
})();
