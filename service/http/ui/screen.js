// The screen page: one file through POST /predict and POST /explain; several through
// POST /predict_batch, any of which can then be opened on its own.
"use strict";

(() => {
  const { $, api, errorOf, announce, setBar, viewer, displayable } = Pneumo;
  const view = viewer("screen");
  const BATCH_CHUNK = 8; // stays under any sensible PNEUMOSCAN_MAX_BATCH_ITEMS

  function showRefusal(error) {
    $("answer").hidden = true;
    $("refusal").hidden = false;
    $("refusal-code").textContent = error.code;
    $("refusal-detail").textContent = error.detail;
    $("result-label").textContent = "";
    $("result-probability").textContent = "";
  }

  function showAnswer(body) {
    $("refusal").hidden = true;
    $("answer").hidden = false;
    const label = $("result-label");
    label.textContent = body.label;
    label.className = `label-${body.label}`;
    $("result-probability").textContent = body.probability.toFixed(3);
    $("result-threshold").textContent = body.threshold.toFixed(3);
    $("result-ood").hidden = !body.out_of_distribution;
    setBar($("result-bar"), body.probability, body.threshold);
  }

  async function screenOne(file) {
    $("batch").hidden = file.fromBatch ? false : true;
    $("result").hidden = false;
    $("result-name").textContent = file.name;
    $("result-version").textContent = "";
    $("answer").hidden = true;
    $("refusal").hidden = true;
    view.clear();
    announce(`Scoring ${file.name}...`);
    const form = new FormData();
    form.append("image", file, file.name);
    const predicted = await api("/predict", { method: "POST", body: form, headers: { Accept: "application/json" } });
    const plain = displayable(file.name) ? file : null;
    if (!predicted.ok) {
      const error = await errorOf(predicted);
      showRefusal(error);
      view.set(plain, null, "No heatmap: the image was refused.");
      announce(`${file.name} was refused: ${error.code}.`);
      return;
    }
    const body = await predicted.json();
    showAnswer(body);
    $("result-version").textContent = body.model_version;
    announce(`${file.name}: ${body.label}. Drawing the heatmap...`);
    const again = new FormData();
    again.append("image", file, file.name);
    const explained = await api("/explain", { method: "POST", body: again });
    if (explained.ok) {
      view.set(plain, await explained.blob(), plain ? "" : "DICOM: the heatmap image shows the decoded X-ray.");
      announce(`${file.name}: ${body.label}, P(pneumonia) ${body.probability.toFixed(3)}.`);
    } else {
      const error = await errorOf(explained);
      view.set(plain, null, `No heatmap: ${error.code}: ${error.detail}`);
      announce(`${file.name}: ${body.label}; no heatmap (${error.code}).`);
    }
  }

  function batchRow(file, item) {
    const row = document.createElement("tr");
    row.dataset.testid = "batch-row";
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = file.name;
    const answer = document.createElement("td");
    const probability = document.createElement("td");
    if (item.error) {
      answer.innerHTML = "<span>Refused: <code></code></span> <span></span>";
      answer.querySelector("code").textContent = item.error.code;
      answer.lastElementChild.textContent = item.error.detail;
      answer.dataset.testid = "batch-refusal";
    } else {
      answer.textContent = item.label;
      answer.className = `label-${item.label}`;
      answer.dataset.testid = "batch-label";
      probability.textContent = `${item.probability.toFixed(3)} (threshold ${item.threshold.toFixed(3)})`;
    }
    const open = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Open";
    button.setAttribute("aria-label", `Open ${file.name} with its heatmap`);
    button.addEventListener("click", () => { file.fromBatch = true; screenOne(file).then(() => $("result-heading").scrollIntoView()); });
    open.append(button);
    row.append(name, answer, probability, open);
    return row;
  }

  async function screenMany(files) {
    $("result").hidden = true;
    $("batch").hidden = false;
    const rows = $("batch-rows");
    rows.replaceChildren();
    for (let start = 0; start < files.length; start += BATCH_CHUNK) {
      const chunk = files.slice(start, start + BATCH_CHUNK);
      announce(`Scoring files ${start + 1}-${start + chunk.length} of ${files.length}...`);
      const form = new FormData();
      chunk.forEach((file) => form.append("images", file, file.name));
      const response = await api("/predict_batch", { method: "POST", body: form, headers: { Accept: "application/json" } });
      if (!response.ok) {
        const error = await errorOf(response);
        chunk.forEach((file) => rows.append(batchRow(file, { error })));
        continue;
      }
      const body = await response.json();
      body.results.forEach((item, index) => rows.append(batchRow(chunk[index], item)));
    }
    announce(`${files.length} files scored.`);
  }

  function take(fileList) {
    const files = Array.from(fileList);
    if (files.length === 1) screenOne(files[0]);
    else if (files.length > 1) screenMany(files);
  }

  const zone = $("drop-zone");
  $("upload").addEventListener("change", (event) => take(event.target.files));
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    take(event.dataTransfer.files);
  });
  Pneumo.start();
})();
