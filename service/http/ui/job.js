// One job: its progress (GET /jobs/{id}, polled until it ends), then its results (summary plot,
// counts, downloads), the readers-vs-model agreement, and the review of its images
// (GET /jobs/{id}/images/{file}, POST /explain, POST /jobs/{id}/reviews).
"use strict";

(() => {
  const { $, api, errorOf, announce, setBar, viewer, displayable, downloadLink, duration, parseCsv, setAside } = Pneumo;
  const jobId = location.pathname.split("/").filter(Boolean).pop();
  const base = `/jobs/${jobId}`;
  const view = viewer("review");
  const READER = "pneumoscan.reader";
  let rows = [];
  let latest = new Map(); // file -> its latest review
  let index = 0;
  let showing = 0; // which load of the viewer is current

  document.title = `Job ${jobId} - pneumoscan`;
  $("job-id").textContent = jobId;

  function showStatus(job) {
    $("job-state").textContent = job.state + (job.detail ? `: ${job.detail}` : "");
    const progress = $("job-progress");
    progress.max = Math.max(1, job.total);
    progress.value = job.state === "done" ? progress.max : job.done;
    const aside = setAside(job);
    $("job-counts").textContent = `${job.done} of ${job.total} files` + (aside ? `, ${aside}` : "");
    $("job-eta").textContent = job.state === "running" && job.eta_seconds != null ? `about ${duration(job.eta_seconds)} left` : "";
    $("job-folder").textContent = job.input_folder || "";
    $("job-created").textContent = job.created ? new Date(job.created).toLocaleString() : "";
  }

  async function poll() {
    const response = await api(base);
    if (!response.ok) {
      const error = await errorOf(response);
      announce(`${error.code}: ${error.detail}`);
      return;
    }
    const job = await response.json();
    showStatus(job);
    if (job.state === "done") finished();
    else if (job.state !== "failed") setTimeout(poll, 2000);
  }

  function countTable(body, counts) {
    body.replaceChildren();
    for (const [name, count] of Object.entries(counts).sort()) {
      const row = document.createElement("tr");
      const head = document.createElement("th");
      head.scope = "row";
      head.textContent = name;
      const cell = document.createElement("td");
      cell.textContent = String(count);
      row.append(head, cell);
      body.append(row);
    }
    if (!body.children.length) body.innerHTML = "<tr><td colspan='2'>None</td></tr>";
  }

  async function finished() {
    $("results").hidden = false;
    downloadLink($("download-results"), `${base}/results`, `${jobId}-results.csv`, "text/csv");
    downloadLink($("download-fhir"), `${base}/results`, `${jobId}-bundle.json`, "application/fhir+json");
    downloadLink($("download-manifest"), `${base}/export`, `${jobId}-manifest.json`, "application/json");
    downloadLink($("review-export"), `${base}/reviews.csv`, `${jobId}-reviews.csv`, "text/csv");
    const [results, plot] = await Promise.all([api(`${base}/results`, { headers: { Accept: "text/csv" } }), api(`${base}/summary.png`)]);
    if (plot.ok) {
      $("summary-plot").src = URL.createObjectURL(await plot.blob());
      $("summary-plot").hidden = false;
    }
    if (!results.ok) {
      const error = await errorOf(results);
      announce(`${error.code}: ${error.detail}`);
      return;
    }
    rows = parseCsv(await results.text());
    const labels = {}, refusals = {};
    for (const row of rows) {
      if (row.status === "ok") labels[row.label] = (labels[row.label] || 0) + 1;
      else refusals[row.error_code] = (refusals[row.error_code] || 0) + 1;
    }
    countTable($("label-counts"), labels);
    countTable($("refusal-counts"), refusals);
    await loadReviews();
    $("agreement").hidden = false;
    if (rows.length) {
      $("review").hidden = false;
      const firstOpen = rows.findIndex((row) => !latest.has(row.path));
      go(firstOpen >= 0 ? firstOpen : 0);
    }
  }

  function rate(value) {
    if (value.value === null) return "no files yet (n = 0)";
    const pct = (x) => `${(100 * x).toFixed(1)}%`;
    return `${pct(value.value)} (95% interval ${pct(value.low)}-${pct(value.high)}, n = ${value.n})`;
  }

  async function loadReviews() {
    const response = await api(`${base}/reviews`);
    if (!response.ok) return;
    const body = await response.json();
    latest = new Map(body.latest.map((review) => [review.file, review]));
    const agreement = body.agreement;
    $("agreement-reviewed").textContent = String(agreement.reviewed);
    $("agreement-files").textContent = String(agreement.files);
    $("agreement-agreed").textContent = String(agreement.agreed);
    $("agreement-sensitivity").textContent = rate(agreement.sensitivity);
    $("agreement-specificity").textContent = rate(agreement.specificity);
    $("agreement-refused").textContent = String(agreement.refused_xrays);
    $("agreement-not-xrays").textContent = String(agreement.scored_not_xrays);
  }

  function describe(review) {
    if (!review) return "Not reviewed yet.";
    const truth = review.truth ? `, truth ${review.truth}` : "";
    return `Latest review: ${review.verdict}${truth}, by ${review.reader}, ${new Date(review.time).toLocaleString()}.`;
  }

  function showLatest(row) {
    const review = latest.get(row.path);
    const element = $("review-latest");
    element.textContent = describe(review);
    element.dataset.verdict = review ? review.verdict : "";
    element.dataset.truth = review && review.truth ? review.truth : "";
  }

  function imagePath(file) {
    return `${base}/images/${file.split("/").map(encodeURIComponent).join("/")}`;
  }

  async function go(target) {
    if (!rows.length) return;
    index = (target + rows.length) % rows.length;
    const row = rows[index];
    const load = ++showing;
    $("review-position").textContent = `Image ${index + 1} of ${rows.length}: ${row.path}`;
    $("review-position").dataset.file = row.path;
    const scored = row.status === "ok";
    $("review-answer").hidden = !scored;
    $("review-refusal").hidden = scored;
    $("review-version").textContent = row.model_version;
    if (scored) {
      const probability = Number(row.probability), threshold = Number(row.threshold);
      $("review-label").textContent = row.label;
      $("review-label").className = `label-${row.label}`;
      $("review-probability").textContent = probability.toFixed(3);
      $("review-threshold").textContent = threshold.toFixed(3);
      setBar($("review-bar"), probability, threshold);
    } else {
      $("review-label").textContent = "";
      $("review-probability").textContent = "";
      $("review-refusal-code").textContent = row.error_code;
      $("review-refusal-detail").textContent = row.error_detail;
    }
    showLatest(row);
    view.clear();
    const image = await api(imagePath(row.path));
    if (load !== showing) return;
    if (!image.ok) {
      const error = await errorOf(image);
      view.set(null, null, `The image cannot be shown: ${error.code}: ${error.detail}`);
      return;
    }
    const blob = await image.blob();
    const plain = displayable(row.path) ? blob : null;
    if (!scored) {
      view.set(plain, null, "No heatmap: the model refused this file.");
      return;
    }
    const form = new FormData();
    form.append("image", blob, row.path.split("/").pop());
    const explained = await api("/explain", { method: "POST", body: form });
    if (load !== showing) return;
    if (explained.ok) view.set(plain, await explained.blob(), plain ? "" : "DICOM: the heatmap image shows the decoded X-ray.");
    else {
      const error = await errorOf(explained);
      view.set(plain, null, `No heatmap: ${error.code}: ${error.detail}`);
    }
  }

  async function review(choice) {
    const reader = $("reader").value.trim();
    if (!reader) {
      announce("Type your name first: it is stored with each review.");
      $("reader").focus();
      return;
    }
    localStorage.setItem(READER, reader);
    const row = rows[index];
    const response = await api(`${base}/reviews`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ file: row.path, reader, ...choice }),
    });
    if (!response.ok) {
      const error = await errorOf(response);
      announce(`Not stored: ${error.code}: ${error.detail}`);
      return;
    }
    const stored = await response.json();
    latest.set(stored.file, stored);
    announce(`Stored: ${row.path}, ${stored.verdict}${stored.truth ? `, truth ${stored.truth}` : ""}.`);
    await loadReviews();
    if (index < rows.length - 1) go(index + 1);
    else showLatest(row);
  }

  function nextUnreviewed() {
    for (let step = 1; step <= rows.length; step++) {
      const candidate = (index + step) % rows.length;
      if (!latest.has(rows[candidate].path)) return go(candidate);
    }
    announce("Every image has a review.");
  }

  $("reader").value = localStorage.getItem(READER) || "";
  $("review-previous").addEventListener("click", () => go(index - 1));
  $("review-next").addEventListener("click", () => go(index + 1));
  $("review-next-open").addEventListener("click", nextUnreviewed);
  $("review-agree").addEventListener("click", () => review({ verdict: "agree" }));
  $("review-disagree").addEventListener("click", () => review({ verdict: "disagree" }));
  document.querySelectorAll("[data-truth]").forEach((button) =>
    button.addEventListener("click", () => review({ truth: button.dataset.truth })));

  const KEYS = {
    a: () => review({ verdict: "agree" }), d: () => review({ verdict: "disagree" }),
    n: () => review({ truth: "NORMAL" }), p: () => review({ truth: "PNEUMONIA" }),
    x: () => review({ truth: "not_a_chest_xray" }),
    arrowleft: () => go(index - 1), k: () => go(index - 1), arrowright: () => go(index + 1), j: () => go(index + 1),
    u: nextUnreviewed, h: () => view.toggle(),
  };
  document.addEventListener("keydown", (event) => {
    if ($("review").hidden || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    const key = event.key.toLowerCase();
    // Typing goes to text fields; arrows move a slider.
    if (target.closest && target.closest("input:not([type=checkbox]):not([type=range]), textarea, select, [contenteditable]")) return;
    if (target.type === "range" && key.startsWith("arrow")) return;
    const action = KEYS[key];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  Pneumo.start().then(poll);
})();
