// The jobs page: GET /jobs polled (every 2 s while a job is queued or running), POST /jobs to
// start one. Rows are updated in place, so keyboard focus stays where it is.
"use strict";

(() => {
  const { $, api, errorOf, announce, duration, setAside } = Pneumo;
  const rows = new Map();
  let timer = null;

  function schedule(milliseconds) {  // one polling loop, however refresh() was called
    clearTimeout(timer);
    timer = setTimeout(refresh, milliseconds);
  }

  function cell(row, index) {
    return row.children[index];
  }

  function newRow(job) {
    const row = document.createElement("tr");
    row.dataset.testid = "job-row";
    row.dataset.jobId = job.job_id;
    row.innerHTML = "<th scope='row'><a></a></th><td data-testid='job-state'></td><td><progress data-testid='job-progress' max='1' value='0'></progress></td>" +
      "<td data-testid='job-counts'></td><td></td><td data-testid='job-eta'></td><td></td><td></td>";
    const link = row.querySelector("a");
    link.href = `/ui/jobs/${job.job_id}`;
    link.textContent = job.job_id;
    link.dataset.testid = "job-link";
    row.querySelector("progress").setAttribute("aria-label", `Progress of job ${job.job_id}`);
    return row;
  }

  function update(row, job) {
    row.dataset.state = job.state;
    cell(row, 1).textContent = job.state + (job.detail ? `: ${job.detail}` : "");
    const progress = row.querySelector("progress");
    progress.max = Math.max(1, job.total);
    progress.value = job.state === "done" ? progress.max : job.done;
    const aside = setAside(job);
    cell(row, 3).textContent = `${job.done} of ${job.total}` + (aside ? ` (${aside})` : "");
    cell(row, 4).textContent = job.images_per_second ? job.images_per_second.toFixed(1) : "";
    cell(row, 5).textContent = job.state === "running" ? duration(job.eta_seconds) : "";
    cell(row, 6).textContent = job.input_folder || "";
    cell(row, 7).textContent = job.created ? new Date(job.created).toLocaleString() : "";
  }

  async function refresh() {
    let active = false;
    try {
      const response = await api("/jobs");
      if (response.ok) {
        const { jobs } = await response.json();
        const body = $("job-rows");
        jobs.forEach((job, index) => {
          let row = rows.get(job.job_id);
          if (!row) {
            row = newRow(job);
            rows.set(job.job_id, row);
          }
          if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
          update(row, job);
          active ||= job.state === "queued" || job.state === "running";
        });
        $("no-jobs").hidden = jobs.length > 0;
      }
    } finally {
      schedule(active ? 2000 : 5000);
    }
  }

  $("start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const folder = $("folder").value.trim();
    if (!folder) return;
    announce("Starting...");
    const response = await api("/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ folder }),
    });
    if (!response.ok) {
      const error = await errorOf(response);
      announce(`Not started: ${error.code}: ${error.detail}`);
      return;
    }
    const created = await response.json();
    announce(`Job ${created.job_id} is ${created.state}.`);
    refresh();
  });

  Pneumo.start().then(refresh);
})();
