/* Loa browser chat: vanilla JS, no external resources.
 *
 * Outgoing messages go through one ordered queue; each keeps its client id across retries, so a
 * POST repeated on a flaky connection is processed once by the server. Bot messages arrive by
 * long-polling /chat/messages with a cursor; asking for what follows a cursor confirms
 * everything up to it. The transcript, cursor and user token live in localStorage.
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var logEl = $("log"), choicesEl = $("choices"), form = $("composer"), input = $("text"),
      fileInput = $("file"), banner = $("banner"), districtEl = $("district");

  var MAX_KEEP = 200;
  var REF_RE = /^[A-Za-z0-9_-]{1,64}$/;
  var URL_RE = /(https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]'])/g;

  // -- storage (private mode or a full quota must not break the chat) ---------------------------
  var mem = {};
  function load(name, fallback) {
    try {
      var raw = window.localStorage.getItem("loa." + name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (e) { return name in mem ? mem[name] : fallback; }
  }
  function save(name, value) {
    mem[name] = value;
    try { window.localStorage.setItem("loa." + name, JSON.stringify(value)); } catch (e) { /* kept in memory */ }
  }

  function randomId(length) {
    var alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    var bytes = new Uint8Array(length), out = "";
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    for (var i = 0; i < length; i++) out += alphabet[bytes[i] & 63];
    return out;
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  var user = load("user", null);
  if (typeof user !== "string" || !/^[A-Za-z0-9_-]{16,64}$/.test(user)) {
    user = randomId(24);
    save("user", user);
  }

  var district = null, ns = "", transcript = [], cursor = 0, ttl = 0;
  var queue = [], sending = false, typingTimer = null;

  // -- rendering --------------------------------------------------------------------------------
  function linkify(parent, text) {
    var last = 0, match;
    URL_RE.lastIndex = 0;
    while ((match = URL_RE.exec(text)) !== null) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      var a = document.createElement("a");
      a.href = match[0]; a.textContent = match[0]; a.target = "_blank"; a.rel = "noopener noreferrer";
      parent.appendChild(a);
      last = match.index + match[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function statusText(entry) {
    if (entry.status === "sending") return "đang gửi…";
    if (entry.status === "retry") return "chưa gửi được — đang thử lại…";
    return "";
  }

  function render(entry) {
    var row = document.createElement("div");
    row.className = "row " + (entry.who === "bot" ? "bot" : "me") +
      (entry.status === "error" || entry.status === "failed" ? " unsent" : "");
    var bubble = document.createElement("div");
    bubble.className = "bubble" + (entry.notice ? " notice-" + entry.notice : "") +
      (entry.image && !entry.text ? " photo" : "");
    if (entry.image) {
      var link = document.createElement("a");
      link.href = entry.image; link.target = "_blank"; link.rel = "noopener";
      var img = document.createElement("img");
      img.src = entry.image; img.alt = entry.who === "bot" ? "Ảnh mẫu" : "Ảnh bạn đã gửi";
      img.loading = "lazy";
      img.addEventListener("load", scrollDown);
      link.appendChild(img);
      bubble.appendChild(link);
    } else if (entry.kind === "image") {
      var ph = document.createElement("span");
      ph.className = "placeholder"; ph.textContent = "Ảnh" + (entry.name ? ": " + entry.name : "");
      bubble.appendChild(ph);
    }
    if (entry.text) {
      var p = document.createElement("p");
      linkify(p, entry.text);
      bubble.appendChild(p);
    }
    row.appendChild(bubble);
    if (entry.who === "me") {
      var meta = document.createElement("div");
      meta.className = "meta";
      if (entry.status === "error") {
        meta.className += " error";
        meta.textContent = entry.error || "Không gửi được.";
      } else if (entry.status === "failed") {
        meta.className += " error";
        meta.textContent = "Không gửi được. ";
        var again = document.createElement("button");
        again.type = "button"; again.className = "linkish"; again.textContent = "Gửi lại";
        again.addEventListener("click", function () { entry.status = "sending"; update(entry); enqueue(entry); });
        meta.appendChild(again);
      } else {
        meta.textContent = statusText(entry);
      }
      row.appendChild(meta);
    }
    entry.el = row;
    return row;
  }

  function update(entry) {
    var old = entry.el;
    if (old && old.parentNode) old.parentNode.replaceChild(render(entry), old);
    if (transcript.indexOf(entry) >= transcript.length - 2) scrollDown();
    persist();
  }

  function scrollDown() { logEl.scrollTop = logEl.scrollHeight; }

  function append(entry) {
    transcript.push(entry);
    var typing = logEl.querySelector(".typing");
    var row = render(entry);
    if (typing) logEl.insertBefore(row, typing); else logEl.appendChild(row);
    persist();
    showChoices();
    scrollDown();
  }

  function persist() {
    var keep = transcript.slice(-MAX_KEEP).map(function (e) {
      return { who: e.who, text: e.text, image: e.who === "bot" ? e.image : e.thumb, kind: e.kind,
               choices: e.choices, notice: e.notice, id: e.id, status: e.status, error: e.error, name: e.name,
               start: e.start, ref: e.ref, payload: e.payload, at: e.at };
    });
    save(ns + "log", keep);
    save(ns + "cursor", cursor);
  }

  function showChoices() {
    choicesEl.textContent = "";
    // The latest bot message's buttons, unless the person has answered it since (a message
    // the server refused is no answer: the buttons come back).
    var last = null;
    for (var i = transcript.length - 1; i >= 0; i--) {
      var e = transcript[i];
      if (e.who === "bot") { last = e; break; }
      if (e.status !== "error" && e.status !== "failed") break;
    }
    if (!last || !last.choices || !last.choices.length) {
      choicesEl.hidden = true;
      return;
    }
    last.choices.forEach(function (choice) {
      var b = document.createElement("button");
      b.type = "button"; b.className = "chip"; b.textContent = choice.title;
      b.addEventListener("click", function () {
        sendEntry({ who: "me", text: choice.title, payload: choice.payload });
      });
      choicesEl.appendChild(b);
    });
    choicesEl.hidden = false;
    scrollDown();
  }

  function typing(on) {
    var el = logEl.querySelector(".typing");
    clearTimeout(typingTimer);
    if (!on) { if (el) el.remove(); return; }
    if (!el) {
      el = document.createElement("div");
      el.className = "row bot typing";
      el.setAttribute("aria-label", "Loa đang trả lời");
      el.innerHTML = '<div class="bubble"><span></span><span></span><span></span></div>';
      logEl.appendChild(el);
      scrollDown();
    }
    typingTimer = setTimeout(function () { typing(false); }, 12000);
  }

  function setBanner(text) {
    banner.textContent = text || "";
    banner.hidden = !text;
  }

  // -- sending ----------------------------------------------------------------------------------
  function sendEntry(entry) {
    entry.id = entry.id || "m" + randomId(20);
    entry.status = "sending";
    entry.at = Date.now();
    if (!entry.start) append(entry);
    choicesEl.hidden = true;
    enqueue(entry);
  }

  function enqueue(entry) {
    queue.push(entry);
    if (!sending) drainQueue();
  }

  async function drainQueue() {
    sending = true;
    while (queue.length) {
      var entry = queue[0];
      var outcome = await deliver(entry);
      queue.shift();
      if (outcome === "ok") {
        entry.status = "sent";
        if (!entry.start) typing(true);
      } else if (outcome === "error") {
        entry.status = "error";
      } else {
        entry.status = "failed";
      }
      if (entry.el) update(entry); else persist();
      if (entry.status !== "sent") showChoices();
    }
    sending = false;
  }

  // "ok", "error" (the server refused it: entry.error says why) or "failed" (no connection).
  async function deliver(entry) {
    for (var attempt = 0; attempt < 6; attempt++) {
      try {
        var response;
        if (entry.file) {
          var body = new FormData();
          body.append("user", user); body.append("district", district); body.append("id", entry.id);
          body.append("file", entry.file, entry.file.name || "anh.jpg");
          response = await fetch("/chat/upload", { method: "POST", body: body });
        } else {
          var data = { user: user, district: district, id: entry.id };
          if (entry.start) { data.start = true; if (entry.ref) data.ref = entry.ref; }
          else if (entry.payload) { data.payload = entry.payload; data.text = entry.text; }
          else data.text = entry.text;
          response = await fetch("/chat/send", {
            method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data)
          });
        }
        if (response.ok) { setBanner(""); return "ok"; }
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
          var reply = await response.json().catch(function () { return {}; });
          entry.error = reply.error || "Không gửi được tin nhắn này.";
          return "error";
        }
      } catch (e) { /* network: retry below */ }
      if (entry.status !== "retry") { entry.status = "retry"; update(entry); }
      setBanner("Mạng chập chờn, đang thử gửi lại…");
      await sleep(Math.min(8000, 700 * Math.pow(2, attempt)));
    }
    return "failed";
  }

  function onSubmit(event) {
    event.preventDefault();
    var text = input.value.normalize("NFC").trim();
    if (!text) return;
    input.value = "";
    grow();
    sendEntry({ who: "me", text: text });
    input.focus();
  }

  function thumbnail(file) {
    return new Promise(function (resolve) {
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () {
        var scale = Math.min(1, 320 / Math.max(img.width, img.height));
        var canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(img.width * scale));
        canvas.height = Math.max(1, Math.round(img.height * scale));
        canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
        var small = null;
        try { small = canvas.toDataURL("image/jpeg", 0.7); } catch (e) { /* tainted */ }
        URL.revokeObjectURL(url);
        resolve(small);
      };
      img.onerror = function () { URL.revokeObjectURL(url); resolve(null); };
      img.src = url;
    });
  }

  async function onFile() {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!file) return;
    var thumb = await thumbnail(file);
    sendEntry({ who: "me", kind: "image", file: file, image: thumb, thumb: thumb,
                name: (file.name || "").slice(0, 60) });
  }

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 128) + "px";
  }

  // -- receiving --------------------------------------------------------------------------------
  async function poll() {
    var failures = 0;
    for (;;) {
      if (ttl && load(ns + "seen", 0) && Date.now() - load(ns + "seen", 0) > (ttl - 3600) * 1000) {
        cursor = 0; // the conversation expired on the server: its numbering starts again
      }
      try {
        var url = "/chat/messages?user=" + encodeURIComponent(user) + "&district=" +
          encodeURIComponent(district) + "&after=" + cursor + "&wait=25";
        var response = await fetch(url, { cache: "no-store" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        var data = await response.json();
        failures = 0;
        setBanner("");
        save(ns + "seen", Date.now());
        (data.messages || []).forEach(function (m) {
          if (m.seq <= cursor) return;
          cursor = m.seq;
          typing(false);
          append({ who: "bot", text: m.text, choices: m.choices, image: m.image, notice: m.notice, seq: m.seq });
        });
        persist();
      } catch (e) {
        failures++;
        if (failures > 1) setBanner("Mất kết nối, đang thử kết nối lại…");
        await sleep(Math.min(15000, 500 * Math.pow(2, failures)));
      }
    }
  }

  // -- start ------------------------------------------------------------------------------------
  async function config() {
    for (var attempt = 0; ; attempt++) {
      try {
        var response = await fetch("/chat/config", { cache: "no-store" });
        if (response.ok) return await response.json();
      } catch (e) { /* retry */ }
      setBanner("Đang kết nối…");
      await sleep(Math.min(10000, 800 * Math.pow(2, attempt)));
    }
  }

  async function start() {
    var params = new URLSearchParams(window.location.search);
    var cfg = await config();
    setBanner("");
    ttl = cfg.ttl || 0;
    var slugs = (cfg.districts || []).map(function (d) { return d.slug; });
    district = slugs.indexOf(params.get("d")) >= 0 ? params.get("d") : cfg["default"];
    var info = (cfg.districts || []).filter(function (d) { return d.slug === district; })[0];
    if (info) districtEl.textContent = info.name;
    ns = district + ".";
    cursor = load(ns + "cursor", 0) || 0;
    var saved = load(ns + "log", []) || [];
    saved.forEach(function (e) {
      if (e.start) return;
      if (e.who === "me" && (e.status === "sending" || e.status === "retry")) {
        if (e.kind === "image") { e.status = "error"; e.error = "Ảnh chưa gửi được, bạn chọn lại ảnh nhé."; }
        else queue.push(e);
      }
      transcript.push(e);
      logEl.appendChild(render(e));
    });
    showChoices();
    scrollDown();

    var ref = params.get("ref");
    if (ref && REF_RE.test(ref) && !load(ns + "ref." + ref, false)) {
      save(ns + "ref." + ref, true);
      save(ns + "started", true);
      sendEntry({ who: "me", start: true, ref: ref });
    } else if (!load(ns + "started", false)) {
      save(ns + "started", true);
      sendEntry({ who: "me", start: true });
    } else if (queue.length && !sending) {
      drainQueue();
    }
    poll();
  }

  form.addEventListener("submit", onSubmit);
  input.addEventListener("input", grow);
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) onSubmit(event);
  });
  fileInput.addEventListener("change", onFile);
  start();
})();
