// pneumoscan web page: what every page shares. A thin client of the public HTTP API: the API key
// (asked once, kept in sessionStorage, sent as "Authorization: Bearer"; never put in a URL or a
// log), calls and their errors, downloads, and the X-ray viewer with its Grad-CAM overlay.
"use strict";

const Pneumo = (() => {
  const KEY = "pneumoscan.apiKey";
  let waiting = null; // the promise of a key the reader is being asked for

  function storedKey() {
    return sessionStorage.getItem(KEY);
  }

  function $(id) {
    return document.getElementById(id);
  }

  function show(element, visible) {
    element.hidden = !visible;
  }

  // The key form: built once, in the page's #key-slot.
  function keyForm() {
    let form = $("key-form");
    if (form) return form;
    form = document.createElement("form");
    form.id = "key-form";
    form.className = "key-form";
    form.method = "post";
    form.hidden = true;
    form.setAttribute("aria-labelledby", "key-heading");
    form.innerHTML = `
      <h2 id="key-heading">API key</h2>
      <p id="key-message">This service needs its API key.</p>
      <p><label for="api-key-input">API key</label>
        <input id="api-key-input" name="api-key" type="password" autocomplete="off" spellcheck="false"
               required data-testid="api-key">
        <button type="submit" data-testid="api-key-submit">Use this key</button></p>
      <p id="key-error" class="error" role="alert" data-testid="api-key-error"></p>`;
    ($("key-slot") || document.querySelector("main")).prepend(form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("api-key-input");
      const candidate = input.value.trim();
      if (!candidate) return;
      const answer = await fetch("/client", { headers: { Authorization: `Bearer ${candidate}` }, cache: "no-store" });
      if (answer.status === 401) {
        $("key-error").textContent = "The API key is wrong or revoked.";
        input.select();
        return;
      }
      showClient(answer);
      sessionStorage.setItem(KEY, candidate);
      input.value = "";
      $("key-error").textContent = "";
      form.hidden = true;
      const done = waiting;
      waiting = null;
      if (done) done.resolve();
    });
    return form;
  }

  function askForKey(message) {
    if (!waiting) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      waiting = { promise, resolve };
    }
    const form = keyForm();
    $("key-message").textContent = message;
    if (form.hidden) {
      form.hidden = false;
      $("api-key-input").focus();
    }
    return waiting.promise;
  }

  // fetch() against the API, with the key; a 401 asks for the key and tries again.
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = storedKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      // A key given while this call was under way: try again with it.
      if (storedKey() && storedKey() !== key) return api(path, options);
      if (key) sessionStorage.removeItem(KEY);
      if (key) keyForm();
      const message = key ? "The API key is wrong or has changed; enter it again." : "This service needs its API key.";
      if (key) $("key-error").textContent = "The API key is wrong.";
      await askForKey(message);
      return api(path, options);
    }
    return response;
  }

  // The service's error body, {"error", "detail"}, whatever the answer.
  async function errorOf(response) {
    try {
      const body = await response.json();
      return { code: body.error || `http_${response.status}`, detail: body.detail || response.statusText };
    } catch (_) {
      return { code: `http_${response.status}`, detail: response.statusText || "The service answered with an error." };
    }
  }

  // Makes a link download its API path with the key (links cannot send headers themselves).
  function downloadLink(link, path, filename, accept) {
    link.href = path;
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const response = await api(path, accept ? { headers: { Accept: accept } } : {});
      if (!response.ok) {
        const error = await errorOf(response);
        announce(`Download failed: ${error.code}: ${error.detail}`);
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      const anchor = document.createElement("a");
      anchor.href = url;
      anchor.download = filename;
      anchor.hidden = true;
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    });
  }

  function announce(text) {
    const status = $("status");
    if (status) status.textContent = text;
  }

  function percent(value) {
    return `${(100 * Math.min(1, Math.max(0, value))).toFixed(1)}%`;
  }

  // The probability bar: the fill to P(pneumonia), a mark at the threshold.
  function setBar(bar, probability, threshold) {
    bar.querySelector(".bar-fill").style.width = percent(probability);
    bar.querySelector(".bar-fill").classList.toggle("positive", probability >= threshold);
    bar.querySelector(".bar-threshold").style.left = percent(threshold);
    bar.setAttribute("aria-label", `P(pneumonia) ${probability.toFixed(3)}; threshold ${threshold.toFixed(3)}`);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // A job status's files set aside: refused by the model, and those that could not be read.
  // (A server older than "refused" sent both as "failed".)
  function setAside(job) {
    const refused = job.refused ?? job.failed ?? 0, unreadable = job.unreadable ?? 0;
    return [refused ? `${refused} refused` : "", unreadable ? `${unreadable} unreadable` : ""].filter(Boolean).join(", ");
  }

  // RFC 4180 CSV (quoted fields, doubled quotes, newlines inside quotes) -> objects by header.
  function parseCsv(text) {
    const records = [];
    let record = [], field = "", quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (c === '"') quoted = false;
        else field += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { record.push(field); field = ""; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        record.push(field); records.push(record); record = []; field = "";
      } else field += c;
    }
    if (field || record.length) { record.push(field); records.push(record); }
    const [header, ...rows] = records;
    return rows.filter((row) => row.length > 1 || row[0]).map(
      (row) => Object.fromEntries(header.map((name, index) => [name, row[index] ?? ""])));
  }

  // The viewer: the X-ray, and beside it the Grad-CAM overlay over the X-ray, with an opacity
  // slider and an on/off switch. Element ids share a prefix.
  function viewer(prefix) {
    const base = $(`${prefix}-base`), under = $(`${prefix}-under`), overlay = $(`${prefix}-overlay`);
    const opacity = $(`${prefix}-opacity`), toggle = $(`${prefix}-toggle`), note = $(`${prefix}-note`);
    const urls = [];
    function apply() {
      overlay.style.opacity = toggle.checked ? String(opacity.value / 100) : "0";
      opacity.disabled = !toggle.checked;
    }
    opacity.addEventListener("input", apply);
    toggle.addEventListener("change", apply);
    function url(blob) {
      const made = URL.createObjectURL(blob);
      urls.push(made);
      return made;
    }
    return {
      clear() {
        urls.splice(0).forEach((made) => URL.revokeObjectURL(made));
        for (const image of [base, under, overlay]) { image.removeAttribute("src"); image.hidden = true; }
        note.textContent = "";
      },
      // image: a displayable image blob or null (DICOM); heatmap: the /explain PNG or null.
      set(image, heatmap, message) {
        this.clear();
        if (image) {
          base.src = url(image); base.hidden = false;
          under.src = base.src; under.hidden = false;
        }
        if (heatmap) { overlay.src = url(heatmap); overlay.hidden = false; }
        note.textContent = message || "";
        apply();
      },
      toggle() { toggle.checked = !toggle.checked; apply(); },
    };
  }

  function displayable(name) {
    return /\.(jpe?g|png)$/i.test(name || "");
  }

  // The model version in the header, from GET /version (no key needed).
  async function showVersion() {
    const target = $("served-model");
    if (!target) return;
    try {
      const response = await fetch("/version", { cache: "no-store" });
      if (!response.ok) return;
      const version = await response.json();
      target.textContent = `Model ${version.version}, threshold ${Number(version.threshold).toFixed(3)}`;
    } catch (_) { /* the header line is optional */ }
  }

  // What each scope lets the client do, in the words the header line uses.
  const SCOPE_WORDS = {
    score: "score X-rays",
    jobs: "run and read batch jobs",
    review: "see images and review them",
    admin: "manage deliveries",
  };

  // The header line naming the client this key belongs to and what it may do (GET /client).
  async function showClient(response) {
    let line = $("client-line");
    if (!line) {
      line = document.createElement("p");
      line.id = "client-line";
      line.dataset.testid = "client";
      document.querySelector("header").append(line);
    }
    if (!response.ok) {
      line.textContent = "";
      return;
    }
    const client = await response.json();
    const words = (wanted) => Object.keys(client.may).filter((scope) => client.may[scope] === wanted)
      .map((scope) => SCOPE_WORDS[scope] || scope);
    const may = words(true), mayNot = words(false);
    line.textContent = `Client ${client.name}: may ${may.join(", ") || "nothing"}`
      + (mayNot.length ? `; may not ${mayNot.join(", ")}.` : ".");
  }

  // Before a page loads its data: make sure the key works (asks for it once when needed), and
  // say whose it is.
  async function start() {
    showVersion();
    await showClient(await api("/client"));
  }

  return { $, show, api, errorOf, downloadLink, announce, setBar, percent, duration, setAside, parseCsv, viewer,
           displayable, start };
})();
