// The page at /: languages, not models. The server chooses the model of a language pair as
// LibreTranslate's API does (POST /translate); a model list appears only for a pair that several models
// or versions serve (GET /v1/models, then POST /v1/translate with model and modelVersion).
//
// The text is split into sentences here (Intl.Segmenter) and sent as a list, so that each sentence of
// the translation can offer its alternatives (n-best) on click and the text keeps its layout. Typing
// translates after the server's frontendTimeout; a newer translation aborts the one in flight, and the
// server stops working on it. With "Detect language", POST /detect chooses the source; with a language
// chosen by hand, a confident detection of another one is offered as a one-click fix.
"use strict";

const AUTO = "auto";
const CONFIDENT = 90; // the detection confidence (0-100) from which a disagreeing language is offered
const TOKEN = "rnnmt-token"; // the sessionStorage key of the API key: kept for this tab only

const $ = (id) => document.getElementById(id);

const state = {
  settings: { charLimit: -1, frontendTimeout: 500, supportedFilesFormat: [], language: {} },
  languages: [], // GET /languages: [{code, name, targets}]
  models: [], // GET /v1/models: every served version
  maxTexts: 256, // texts per request (the models' limits)
  detected: null, // {language, confidence} of the text, with "Detect language"
  running: null, // the AbortController of the translation in flight
  timer: 0, // the pending translation while typing
};

// -- calls -------------------------------------------------------------------------------------------

function authorised(headers = {}) {
  const token = sessionStorage.getItem(TOKEN);
  return token ? { ...headers, Authorization: "Bearer " + token } : headers;
}

// The error message of an answer: LibreTranslate's {"error": "..."} or /v1's {"error": {status, message}}.
function errorOf(answer, status) {
  const error = answer && answer.error;
  if (typeof error === "string") return error;
  if (error && error.message) return (error.status ? error.status + ": " : "") + error.message;
  return `The server answered ${status}.`;
}

async function call(path, body, signal) {
  const init = { headers: authorised(), signal };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorOf(answer, response.status));
  return answer;
}

// -- languages and models ----------------------------------------------------------------------------

function nameOf(code) {
  const language = state.languages.find((l) => l.code === code);
  return language ? language.name : code;
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

function byName(codes) {
  return [...codes].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
}

function sourceLanguage() {
  const chosen = $("source-language").value;
  return chosen === AUTO ? state.detected && state.detected.language : chosen;
}

function targetsOf(source) {
  if (source !== AUTO) return (state.languages.find((l) => l.code === source) || { targets: [] }).targets;
  return [...new Set(state.languages.flatMap((l) => l.targets))];
}

// The target list for the chosen source, keeping `preferred` (else the current target, else the default
// model's) when it is one of them.
function fillTargets(preferred) {
  const select = $("target-language");
  const wanted = [preferred, select.value, state.settings.language.target?.code];
  const targets = byName(targetsOf($("source-language").value));
  select.replaceChildren(...targets.map((code) => option(code, nameOf(code))));
  select.value = wanted.find((code) => targets.includes(code)) || targets[0] || "";
  fillModels();
}

function fillSources() {
  const select = $("source-language");
  const chosen = select.value;
  const codes = byName(state.languages.map((l) => l.code));
  select.replaceChildren(select.options[0], ...codes.map((code) => option(code, nameOf(code))));
  select.value = codes.includes(chosen) ? chosen : AUTO;
}

// The served versions of a pair; the first is the one LibreTranslate's API chooses (the latest version
// of the first model by name).
function modelsOf(source, target) {
  const versions = state.models.filter((m) => m.sourceLanguage === source && m.targetLanguage === target);
  const chosen = versions.filter((m) => m.latest).slice(0, 1);
  return [...chosen, ...versions.filter((m) => !chosen.includes(m))];
}

function fillModels() {
  const pair = `${sourceLanguage()} ${$("target-language").value}`;
  const versions = modelsOf(sourceLanguage(), $("target-language").value);
  const select = $("model");
  const chosen = select.dataset.pair === pair ? select.value : "0";
  select.dataset.pair = pair;
  select.replaceChildren(
    ...versions.map((m, i) => {
      const label = m.name + (m.modelVersion ? ` · version ${m.modelVersion}` : "");
      return option(String(i), i === 0 ? label + " (default)" : label);
    }),
  );
  select.value = Number(chosen) < versions.length ? chosen : "0";
  $("model-field").hidden = versions.length < 2;
}

function showDetected() {
  const found = state.detected;
  $("source-language").options[0].textContent = found ? `${nameOf(found.language)} — detected` : "Detect language";
  $("swap").disabled = !state.languages.some((l) => l.code === $("target-language").value);
}

async function loadLanguages() {
  $("notice").textContent = "";
  try {
    const [languages, info] = await Promise.all([call("/languages"), call("/v1/models")]);
    state.languages = languages;
    state.models = info.models || [];
    state.maxTexts = Math.min(...state.models.map((m) => m.limits.maxTextsPerRequest || 256), 256);
  } catch (error) {
    $("notice").textContent = "Cannot list the languages: " + error.message;
  }
  fillSources();
  fillTargets();
  showDetected();
}

async function load() {
  try {
    state.settings = await call("/frontend/settings");
  } catch (error) {
    $("notice").textContent = "Cannot reach the server: " + error.message;
    return;
  }
  $("token-form").hidden = !state.settings.keyRequired;
  $("token").value = sessionStorage.getItem(TOKEN) || "";
  const formats = state.settings.supportedFilesFormat;
  $("file").accept = formats.join(",");
  $("formats").textContent = "Formats: " + formats.join(", ");
  counted();
  await loadLanguages();
}

// -- translation -------------------------------------------------------------------------------------

// The text as pieces {lead, text, trail}: a sentence (text, maybe empty) and the white space around it.
function sentences(text) {
  const language = sourceLanguage() || undefined;
  const segmenter = new Intl.Segmenter(language, { granularity: "sentence" });
  return Array.from(segmenter.segment(text), ({ segment }) => {
    const [, lead, sentence, trail] = /^(\s*)([\s\S]*?)(\s*)$/.exec(segment);
    return { lead, text: sentence, trail };
  });
}

function distinct(alternatives, translation) {
  const seen = new Set([translation, ""]);
  return alternatives.filter((text) => !seen.has(text) && seen.add(text));
}

// Per text {text, alternatives}: by the server's choice of model for the pair (/translate), or by the
// model chosen in the list (/v1/translate), with as many alternatives as its beam allows.
async function translations(texts, source, target, signal) {
  const versions = modelsOf(source, target);
  if (!versions.length) throw new Error(`Nothing here translates from ${nameOf(source)} to ${nameOf(target)}.`);
  const index = $("model-field").hidden ? 0 : Number($("model").value);
  const model = versions[index];
  const alternatives = Math.max(0, model.defaults.beamSize - 1);
  const chunks = [];
  for (let i = 0; i < texts.length; i += state.maxTexts) chunks.push(texts.slice(i, i + state.maxTexts));
  const answers = await Promise.all(
    chunks.map(async (q) => {
      if (index === 0) {
        const answer = await call("/translate", { q, source, target, alternatives, format: "text" }, signal);
        return answer.translatedText.map((text, i) => ({ text, alternatives: answer.alternatives?.[i] || [] }));
      }
      const request = { texts: q, model: model.name, modelVersion: model.modelVersion };
      request.options = { nBest: alternatives + 1 };
      const answer = await call("/v1/translate", request, signal);
      return answer.translations.map(({ hypotheses }) => ({
        text: hypotheses[0].text,
        alternatives: distinct(hypotheses.slice(1).map((h) => h.text), hypotheses[0].text),
      }));
    }),
  );
  return answers.flat();
}

async function detect(text, signal) {
  const [found] = await call("/detect", { q: text }, signal);
  return found;
}

function busy(on) {
  $("result").setAttribute("aria-busy", String(on));
}

function show(pieces, translated) {
  const result = $("result");
  result.replaceChildren();
  closeAlternatives();
  let next = 0;
  for (const piece of pieces) {
    result.append(piece.lead);
    if (piece.text) {
      const { text, alternatives } = translated[next++];
      if (alternatives.length) {
        // A span, not a button: it wraps across lines as the text around it does.
        const sentence = document.createElement("span");
        sentence.className = "sentence";
        sentence.textContent = text;
        sentence.tabIndex = 0;
        sentence.title = "Other translations";
        sentence.setAttribute("role", "button");
        sentence.setAttribute("aria-expanded", "false");
        sentence.setAttribute("aria-controls", "alternatives");
        sentence.addEventListener("click", () => openAlternatives(sentence, alternatives));
        sentence.addEventListener("keydown", (event) => {
          if (event.key !== "Enter" && event.key !== " ") return;
          event.preventDefault();
          openAlternatives(sentence, alternatives);
        });
        result.append(sentence);
      } else {
        result.append(text);
      }
    }
    result.append(piece.trail);
  }
}

// Characters as the server counts them: code points, not UTF-16 units.
function characters() {
  return [...$("source").value].length;
}

function over() {
  const limit = state.settings.charLimit;
  return limit > 0 && characters() > limit;
}

function counted() {
  const count = characters();
  const limit = state.settings.charLimit;
  $("count").textContent =
    limit > 0 ? `${count.toLocaleString()} / ${limit.toLocaleString()}` : `${count.toLocaleString()} characters`;
  $("count").classList.toggle("over", over());
}

function stop() {
  clearTimeout(state.timer);
  if (state.running) state.running.abort();
  state.running = null;
}

// Typing: a translation after frontendTimeout, the one in flight aborted at once (it is stale).
function typed() {
  counted();
  stop();
  busy(true);
  state.timer = setTimeout(translate, state.settings.frontendTimeout);
}

async function translate() {
  stop();
  const text = $("source").value;
  $("error").textContent = "";
  $("hint").hidden = true;
  if (!text.trim() || over()) {
    state.detected = null;
    showDetected();
    fillModels();
    show([], []);
    if (over()) $("error").textContent = `The text is over the limit of ${state.settings.charLimit} characters.`;
    busy(false);
    return;
  }
  const controller = new AbortController();
  state.running = controller;
  const { signal } = controller;
  busy(true);
  try {
    const chosen = $("source-language").value;
    const check = chosen === AUTO ? null : detect(text, signal).catch(() => null);
    if (chosen === AUTO) {
      state.detected = await detect(text, signal);
      showDetected();
      fillModels();
    }
    const source = sourceLanguage();
    const target = $("target-language").value;
    const pieces = sentences(text);
    const translated = await translations(
      pieces.filter((p) => p.text).map((p) => p.text),
      source,
      target,
      signal,
    );
    show(pieces, translated);
    const found = check && (await check);
    if (found && found.language !== source && found.confidence >= CONFIDENT) {
      const name = nameOf(found.language);
      $("hint-text").textContent = `This looks like ${name}.`;
      $("hint-fix").textContent = `Translate from ${name}?`;
      $("hint-fix").value = found.language;
      $("hint").hidden = false;
    }
  } catch (error) {
    if (signal.aborted) return; // a newer translation took over
    show([], []);
    $("error").textContent = error.message;
  }
  if (state.running === controller) {
    state.running = null;
    busy(false);
  }
}

function fromHint() {
  const source = $("hint-fix").value;
  const target = $("target-language").value;
  $("source-language").value = source;
  fillTargets(target === source ? undefined : target);
  showDetected();
  translate();
  $("source").focus();
}

function swap() {
  const source = sourceLanguage();
  const target = $("target-language").value;
  $("source-language").value = target;
  fillTargets(source);
  $("source").value = $("result").textContent;
  state.detected = null;
  showDetected();
  counted();
  translate();
}

function openAlternatives(sentence, alternatives) {
  closeAlternatives();
  sentence.setAttribute("aria-expanded", "true");
  sentence.classList.add("open");
  $("alternatives-list").replaceChildren(
    ...alternatives.map((text) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = text;
      button.addEventListener("click", () => {
        const previous = sentence.textContent;
        sentence.textContent = text;
        alternatives.splice(alternatives.indexOf(text), 1, previous);
        closeAlternatives();
        sentence.focus();
      });
      item.append(button);
      return item;
    }),
  );
  $("alternatives").hidden = false;
  $("alternatives-list").querySelector("button").focus(); // Escape goes back to the sentence
}

function closeAlternatives() {
  for (const open of $("result").querySelectorAll(".sentence.open")) {
    open.classList.remove("open");
    open.setAttribute("aria-expanded", "false");
  }
  $("alternatives").hidden = true;
}

async function copy() {
  try {
    await navigator.clipboard.writeText($("result").textContent);
    $("copied").textContent = "Copied";
  } catch (error) {
    $("copied").textContent = "Cannot copy: " + error.message;
  }
}

// -- files -------------------------------------------------------------------------------------------

function translateFile(event) {
  event.preventDefault();
  const file = $("file").files[0];
  const form = new FormData();
  form.append("file", file);
  form.append("source", $("source-language").value);
  form.append("target", $("target-language").value);
  const progress = $("file-progress");
  const status = $("file-status");
  const done = (error) => {
    progress.hidden = true;
    $("translate-file").disabled = false;
    $("file-error").textContent = error || "";
  };
  const request = new XMLHttpRequest();
  request.open("POST", "/translate_file");
  for (const [name, value] of Object.entries(authorised())) request.setRequestHeader(name, value);
  request.responseType = "json";
  request.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable) return;
    progress.value = e.loaded / e.total;
    status.textContent = `Sending… ${Math.round((100 * e.loaded) / e.total)}%`;
  });
  request.upload.addEventListener("load", () => {
    progress.removeAttribute("value"); // indeterminate: the server is translating
    status.textContent = "Translating…";
  });
  request.addEventListener("load", () => {
    if (request.status !== 200) {
      status.textContent = "";
      done(errorOf(request.response, request.status));
      return;
    }
    const link = $("download");
    link.href = request.response.translatedFileUrl;
    link.download = file.name;
    link.textContent = `Download ${file.name} (${nameOf($("target-language").value)})`;
    link.hidden = false;
    status.textContent = "Translated.";
    done();
  });
  request.addEventListener("error", () => {
    status.textContent = "";
    done("The server could not be reached.");
  });
  $("download").hidden = true;
  $("file-error").textContent = "";
  $("translate-file").disabled = true;
  progress.value = 0;
  progress.hidden = false;
  status.textContent = "Sending…";
  request.send(form);
}

// -- tabs --------------------------------------------------------------------------------------------

function select(tab) {
  for (const each of document.querySelectorAll('[role="tab"]')) {
    const selected = each === tab;
    each.setAttribute("aria-selected", String(selected));
    each.tabIndex = selected ? 0 : -1;
    $(each.getAttribute("aria-controls")).hidden = !selected;
  }
}

function tabKeys(event) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (!step) return;
  const tab = tabs[(tabs.indexOf(event.target) + step + tabs.length) % tabs.length];
  select(tab);
  tab.focus();
  event.preventDefault();
}

// -- wiring ------------------------------------------------------------------------------------------

$("source").addEventListener("input", typed);
$("source").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    translate();
  }
});
$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  translate();
});
$("source-language").addEventListener("change", () => {
  state.detected = null;
  fillTargets();
  showDetected();
  translate();
});
$("target-language").addEventListener("change", () => {
  fillModels();
  showDetected();
  translate();
});
$("model").addEventListener("change", translate);
$("swap").addEventListener("click", swap);
$("hint-fix").addEventListener("click", fromHint);
$("copy").addEventListener("click", copy);
$("alternatives").addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const open = $("result").querySelector(".sentence.open");
  closeAlternatives();
  if (open) open.focus();
});
$("file-form").addEventListener("submit", translateFile);
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN, $("token").value);
  loadLanguages();
});
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", tabKeys);
}
load();
