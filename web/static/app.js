// app.js keeps a dashboard page live without reloading it, and is the only
// script the dashboard has. Every page renders fully on the server; this
// only improves it:
//
//  - It subscribes to /events (Server-Sent Events). Each live part of the
//    page is an element with data-fragment="NAME" and data-events="TYPES";
//    when an event of one of those types arrives, the part is re-fetched
//    from the same URL with ?fragment=NAME and swapped in, at most twice a
//    second however many events arrive. "resync" (events were lost) reloads.
//  - Forms marked data-async are posted with fetch, so the page stays put
//    and the change arrives over /events like anyone else's; without this
//    script they post normally and the server redirects back.
//  - Forms marked data-confirm ask first, and then say so in their
//    confirmed field.
//  - A post the broker refuses for want of a token (logged out in
//    another tab) reloads the page, which is then the login form.
//  - A stream the broker refuses (a 401 once logged out) is not retried
//    by the browser: the page says "not live", fetches its parts (a
//    failure reloads it, showing why) and asks again after 10 seconds.
//  - A dependency graph wider than its box (on a phone) opens scrolled to
//    its root, and a part's swap keeps where the reader scrolled it and
//    which of its <details> (a long reason) they opened.
//  - Every 15 seconds the live parts are fetched again, without the
//    highlight, so that ages ("4m ago", how long the oldest command has
//    waited) keep counting on a page where nothing else changes.
(function () {
  "use strict";

  var body = document.body;
  var live = document.getElementById("live");
  var flash = document.getElementById("flash");
  var resource = body.dataset.resource || "";
  var dirty = {};
  var timer = null;
  var last = 0;
  var source = null;
  var minGap = 500; // ms between refreshes: at most 2 a second
  var tick = 15000; // ms between refreshes that only move the ages
  var retryRefused = 10000; // ms before a stream the broker refused is asked for again

  function parts() {
    return document.querySelectorAll("[data-fragment]");
  }

  function markAll() {
    parts().forEach(function (el) { dirty[el.dataset.fragment] = true; });
    schedule();
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(refresh, Math.max(0, last + minGap - Date.now()));
  }

  function refresh() {
    timer = null;
    last = Date.now();
    var names = Object.keys(dirty);
    var why = dirty;
    dirty = {};
    names.forEach(function (name) {
      var el = document.querySelector('[data-fragment="' + name + '"]');
      if (!el) return;
      // Never swap a part out from under someone typing in it: a box
      // whose value is not what the page last showed is being edited.
      var a = document.activeElement;
      if (el.contains(a) && a.tagName === "INPUT" && a.value !== a.defaultValue) {
        dirty[name] = why[name];
        setTimeout(schedule, 2000);
        return;
      }
      var url = new URL(location.href);
      url.searchParams.set("fragment", name);
      fetch(url, { credentials: "same-origin" })
        .then(function (res) {
          // Gone, or logged out: the full page says why.
          if (!res.ok || res.redirected) { location.reload(); return null; }
          return res.text();
        })
        .then(function (html) {
          if (html === null) return;
          var key = focusKey(el);
          var view = viewOf(el);
          el.innerHTML = html;
          refocus(el, key);
          review(el, view);
          if (why[name] === "tick") return; // only the ages moved
          el.classList.remove("updated");
          void el.offsetWidth; // restart the highlight
          el.classList.add("updated");
        })
        .catch(function () { dirty[name] = why[name]; });
    });
  }

  // focusKey names the element that has the keyboard's focus inside el,
  // so that refocus can give it back once el's content is replaced: a
  // keyboard user would otherwise be sent back to the top of the page.
  // Links to the same page repeat (every row's queue, its package), so
  // the name holds which of them it was, and the row it was in.
  function focusKey(el) {
    var a = document.activeElement;
    if (!a || a === el || !el.contains(a)) return null;
    var esc = window.CSS && CSS.escape ? CSS.escape : function (v) { return v; };
    var sel = null;
    if (a.id) sel = "#" + esc(a.id);
    else if (a.closest("form")) {
      sel = 'form[action="' + esc(a.closest("form").getAttribute("action")) + '"] ' +
        (a.name ? '[name="' + esc(a.name) + '"]' : a.tagName.toLowerCase());
    } else if (a.getAttribute("href")) sel = 'a[href="' + esc(a.getAttribute("href")) + '"]';
    if (!sel) return null;
    return { sel: sel, row: rowOf(a), nth: Array.prototype.indexOf.call(el.querySelectorAll(sel), a) };
  }

  // rowOf names the table row an element is in by the link in its header
  // cell (a command or a package, which keeps its row across updates).
  function rowOf(n) {
    var tr = n.closest("tr"), head = tr && tr.querySelector("th a[href]");
    return head ? head.getAttribute("href") : "";
  }

  function refocus(el, key) {
    if (!key) return;
    var all = el.querySelectorAll(key.sel), n = null;
    for (var i = 0; i < all.length && !n; i++) {
      if (key.row && rowOf(all[i]) === key.row) n = all[i];
    }
    if (!n) n = all[key.nth] || all[0];
    if (n) { n.focus(); return; }
    // Gone (a cancelled package has no Cancel button): the part that
    // shows what became of it takes the focus, where the next Tab goes on.
    el.tabIndex = -1;
    el.focus({ preventScroll: true });
  }

  // showRoot scrolls a graph wider than its box so that its first layer
  // is in view. Each layer is centred in the picture, so the root of a
  // wide graph is in its middle: a phone would open it on the empty space
  // at its left edge, the root cut off.
  function showRoot(box) {
    if (box.scrollWidth <= box.clientWidth) return;
    var first = [], top = Infinity;
    box.querySelectorAll(".dag rect.box").forEach(function (r) {
      var y = r.getBoundingClientRect().top;
      if (y < top - 1) { first = []; top = y; }
      if (y <= top + 1) first.push(r.getBoundingClientRect());
    });
    if (!first.length) return;
    var origin = box.getBoundingClientRect().left - box.scrollLeft;
    var left = Math.min.apply(null, first.map(function (r) { return r.left; })) - origin;
    var right = Math.max.apply(null, first.map(function (r) { return r.right; })) - origin;
    // Centred when it fits; else its first box at the left edge.
    box.scrollLeft = right - left <= box.clientWidth ?
      (left + right - box.clientWidth) / 2 : left - 8;
  }

  // viewOf and review keep what the reader did to a part across its swap:
  // where they scrolled its boxes (a graph swiped sideways) and which of
  // its <details> they opened (a long reason). A box new to the part
  // opens on its graph's root.
  function viewOf(el) {
    return {
      scrolled: Array.prototype.map.call(el.querySelectorAll(".scroll"), function (b) { return b.scrollLeft; }),
      open: Array.prototype.map.call(el.querySelectorAll("details"), function (d) { return d.open; })
    };
  }

  function review(el, view) {
    el.querySelectorAll(".scroll").forEach(function (b, i) {
      if (i < view.scrolled.length) b.scrollLeft = view.scrolled[i];
      else if (b.classList.contains("graph")) showRoot(b);
    });
    el.querySelectorAll("details").forEach(function (d, i) {
      if (view.open[i]) d.open = true;
    });
  }

  function onEvent(type) {
    return function (e) {
      if (resource && type !== "package") {
        try {
          var data = JSON.parse(e.data);
          if (data.resource && data.resource !== resource) return;
        } catch (err) { /* refresh anyway */ }
      }
      parts().forEach(function (el) {
        if ((" " + el.dataset.events + " ").indexOf(" " + type + " ") >= 0) {
          dirty[el.dataset.fragment] = true;
        }
      });
      schedule();
    };
  }

  // connect opens the event stream; wasDown says that events may have
  // been missed before it (a stream the broker refused, asked for again).
  function connect(wasDown) {
    if (!body.dataset.events || !window.EventSource) return;
    wasDown = !!wasDown;
    var es = source = new EventSource(body.dataset.events);
    ["package", "command", "queue"].forEach(function (type) {
      es.addEventListener(type, onEvent(type));
    });
    es.addEventListener("resync", function () { location.reload(); });
    es.onopen = function () {
      live.hidden = false;
      live.textContent = "live";
      live.className = "live on";
      live.title = "This page updates itself as the broker changes";
      // A status region from now on, so that screen readers say when the
      // page stops (and starts again) updating itself; made one only
      // after the first "live", which every page would otherwise say.
      live.setAttribute("role", "status");
      // Events sent while we were away are lost: catch up.
      if (wasDown) markAll();
      wasDown = false;
    };
    es.onerror = function () {
      wasDown = true;
      live.hidden = false;
      live.className = "live";
      if (es.readyState === EventSource.CLOSED) {
        // The broker answered, but not with events (logged out, a token
        // revoked, a broker restarted with --auth): the browser does not
        // try again. Fetch the page's parts, whose failure reloads the
        // page and shows why (the login form, say), and try the stream
        // again a little later.
        live.textContent = "not live";
        live.title = "The broker refused the event stream; this page does not update itself until it is back";
        markAll();
        setTimeout(function () { connect(true); }, retryRefused);
        return;
      }
      live.textContent = "reconnecting…";
      live.title = "The event stream dropped; reload to see the current state";
    };
  }

  function say(msg) {
    flash.textContent = msg;
    flash.hidden = !msg;
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.busy) { e.preventDefault(); return; } // posted already, not answered yet
    if (form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) {
        e.preventDefault();
        return;
      }
      // Asked and answered: the broker need not ask again (it does, with
      // a page of its own, when no script ran).
      if (form.elements.confirmed) form.elements.confirmed.value = "yes";
    }
    if (!form.hasAttribute("data-async") || !window.fetch) return;
    e.preventDefault();
    // Marked busy, not disabled: a disabled button loses the keyboard's
    // focus, which would then start again at the top of the page.
    var button = form.querySelector("button");
    form.dataset.busy = "yes";
    if (button) button.setAttribute("aria-disabled", "true");
    fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" }
    }).then(function (res) {
      if (res.ok) {
        say("");
        // What was typed is saved: the part may be swapped again, and
        // shows the change at once rather than when its event comes.
        form.querySelectorAll("input").forEach(function (i) { i.defaultValue = i.value; });
        var part = form.closest("[data-fragment]");
        if (part) dirty[part.dataset.fragment] = true;
        // With the event stream down, nothing else would show the change.
        if (!source || source.readyState !== EventSource.OPEN) markAll();
        schedule();
        return;
      }
      // Logged out (in another tab, say): the page, loaded again, is
      // the login form, which leads back here.
      if (res.status === 401) { location.reload(); return; }
      return res.text().then(function (text) { say(text || res.statusText); });
    }).catch(function () {
      say("The broker did not answer; try again.");
    }).finally(function () {
      delete form.dataset.busy;
      if (button) button.removeAttribute("aria-disabled");
    });
  });

  document.querySelectorAll(".graph.scroll").forEach(showRoot);
  connect();
  setInterval(function () {
    if (document.hidden || !source || source.readyState !== EventSource.OPEN) return;
    parts().forEach(function (el) {
      if (!(el.dataset.fragment in dirty)) dirty[el.dataset.fragment] = "tick";
    });
    schedule();
  }, tick);
})();
