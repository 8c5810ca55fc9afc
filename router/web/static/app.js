// vendo's web app: the live parts. Calls the JSON API with the session cookie; anything that
// changes state sends the session's CSRF token in X-CSRF-Token. No inline scripts (the CSP forbids them).
const csrf = document.body.dataset.csrf || "";

async function api(method, path) {
  const res = await fetch(path, {method, headers: {"X-CSRF-Token": csrf, "Accept": "application/json"},
                                 credentials: "same-origin"});
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status}`);
  return res.json();
}

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

function dashboard() {
  const rows = () => [...document.querySelectorAll("tr[data-id]")].filter((r) => !TERMINAL.has(r.dataset.status));
  const tick = async () => {
    for (const row of rows()) {
      try {
        const p = await api("GET", `/v1/predictions/${encodeURIComponent(row.dataset.id)}`);
        row.dataset.status = p.status;
        const badge = row.querySelector(".status .badge");
        badge.textContent = p.status;
        badge.className = `badge ${p.status}`;
        const t = p.metrics && p.metrics.predict_time;
        if (typeof t === "number") row.querySelector(".run-time").textContent = `${t.toFixed(2)}s`;
      } catch (e) { /* the next tick tries again */ }
    }
    if (rows().length) setTimeout(tick, 1500);
  };
  if (rows().length) setTimeout(tick, 1500);
}

function prediction(el) {
  const id = el.dataset.id;
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    await api("POST", `/v1/predictions/${encodeURIComponent(id)}/cancel`).catch(() => {});
    location.reload();
  });
  const share = document.getElementById("share");
  if (share) share.addEventListener("click", async () => {
    const on = share.getAttribute("aria-pressed") !== "true";
    await api("POST", `/v1/predictions/${encodeURIComponent(id)}/${on ? "share" : "unshare"}`);
    location.reload();
  });
  if (el.dataset.done === "true") return;
  const output = document.getElementById("output");
  const logs = document.getElementById("logs");
  const status = document.getElementById("status");
  let text = null;
  const source = new EventSource(el.dataset.stream, {withCredentials: true});
  if (status.textContent === "starting") status.textContent = "starting";
  source.addEventListener("output", (e) => {
    status.textContent = "processing";
    status.className = "badge processing";
    if (!text) {
      text = document.createElement("pre");
      text.className = "text";
      output.replaceChildren(text);
    }
    text.textContent += e.data;  // text, never markup: model output is untrusted
  });
  source.addEventListener("logs", (e) => { logs.textContent += e.data + "\n"; });
  source.addEventListener("error", (e) => { if (e.data) logs.textContent += e.data + "\n"; });
  source.addEventListener("done", () => { source.close(); location.reload(); });
}

async function upload(file) {
  const body = new FormData();
  body.append("content", file, file.name);
  const res = await fetch("/v1/files", {method: "POST", body, credentials: "same-origin",
                                        headers: {"X-CSRF-Token": csrf}});
  const out = await res.json();
  if (!res.ok) throw new Error(out.detail || `upload failed: ${res.status}`);
  return out.urls.get;
}

function runForm(form) {
  for (const range of form.querySelectorAll("input[type=range][data-for]")) {
    const box = document.getElementById(range.dataset.for);
    range.addEventListener("input", () => { box.value = range.value; });
    box.addEventListener("input", () => { if (box.value !== "") range.value = box.value; });
  }
  const formError = form.querySelector(".form-error");
  const show = (name, reason) => {
    const slot = form.querySelector(`.field[data-field="${CSS.escape(name)}"] .field-error`);
    const target = slot || formError;
    target.textContent = slot ? reason : `${name}: ${reason}`;
    target.hidden = false;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const e of form.querySelectorAll(".field-error, .form-error")) { e.hidden = true; e.textContent = ""; }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const input = {};
    try {
      for (const field of form.querySelectorAll(".field")) {
        const name = field.dataset.field, kind = field.dataset.kind;
        const control = field.querySelector(`[name="${CSS.escape(name)}"]`);
        if (kind === "checkbox") { input[name] = control.checked; continue; }
        if (kind === "file") { if (control.files.length) input[name] = await upload(control.files[0]); continue; }
        if (kind === "files") {
          if (control.files.length) input[name] = await Promise.all([...control.files].map(upload));
          continue;
        }
        if (kind === "destination") continue;  // the training's, not an input
        const raw = control.value;
        if (raw === "") continue;  // left empty: the model's default applies
        if (kind === "integer") input[name] = Number.isNaN(Number(raw)) ? raw : parseInt(raw, 10);
        else if (kind === "number") input[name] = Number.isNaN(Number(raw)) ? raw : Number(raw);
        else if (kind === "lines") input[name] = raw.split("\n").map((x) => x.trim()).filter((x) => x !== "");
        else if (kind === "json") {
          try { input[name] = JSON.parse(raw); } catch (e) { show(name, "is not valid JSON"); button.disabled = false; return; }
        } else if (kind === "select") input[name] = field.dataset.numeric === "true" ? Number(raw) : raw;
        else input[name] = raw;
      }
      const training = form.dataset.action === "train";
      const [path, body] = training
        ? [`/v1/models/${form.dataset.model}/versions/${encodeURIComponent(form.dataset.version)}/trainings`,
           {destination: form.querySelector('[name="destination"]').value.trim(), input}]
        : ["/v1/predictions", {version: form.dataset.version, input}];
      const res = await fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify(body),
      });
      const out = await res.json();
      if (res.status === 201) { location.href = `/p/${encodeURIComponent(out.id)}`; return; }
      const invalid = out.invalid_fields || [];
      if (invalid.length) for (const f of invalid) show(String(f.field).replace(/^input\./, ""), f.reason);
      else if (training && res.status === 404) show("destination", out.detail || "not found");
      else { formError.textContent = out.detail || `Error ${res.status}`; formError.hidden = false; }
    } catch (e) {
      formError.textContent = String(e.message || e);
      formError.hidden = false;
    }
    button.disabled = false;
  });
}

for (const id of ["run-form", "train-form"]) {
  const form = document.getElementById(id);
  if (form) runForm(form);
}

const el = document.getElementById("prediction");
if (el) prediction(el);
if (document.querySelector("table.predictions")) dashboard();
