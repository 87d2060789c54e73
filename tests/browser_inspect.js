// Runs inside a built page of the book (tests/test_browser.py): waits for MathJax, images and
// fonts, then reports what a reader would see. Returns plain data; the test decides what fails.
async () => {
  const report = {};
  const article = document.querySelector("article.bd-article") || document.querySelector("main");
  const visible = (el) =>
    !!el && (el.checkVisibility ? el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })
                                 : el.getClientRects().length > 0);
  const describe = (el) => {
    const id = el.id || (el.closest("[id]") || {}).id || "";
    const sec = el.closest("section[id]");
    const text = (el.innerText || el.textContent || el.getAttribute("src") || "").trim().replace(/\s+/g, " ");
    return `${el.tagName.toLowerCase()} in #${sec ? sec.id : id}: "${text.slice(0, 80)}"`;
  };

  // MathJax: loaded once, from the book itself, version 3; wait until it has typeset the page.
  report.mathjax_scripts = [...document.querySelectorAll("script[src]")]
    .map((s) => s.src).filter((src) => /mathjax/i.test(src));
  report.mathjax_version = null;
  report.mathjax_error = null;
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    try {
      await Promise.race([
        window.MathJax.startup.promise,
        new Promise((_, reject) => setTimeout(() => reject(new Error("timed out after 30 s")), 30000)),
      ]);
      report.mathjax_version = window.MathJax.version || "?";
    } catch (e) {
      report.mathjax_error = String(e);
    }
  }
  // Sphinx writes every formula as <span|div class="math">\(..\) or \[..\]</span|div>; MathJax
  // replaces its text by an <mjx-container>. A TeX error shows as <mjx-merror>.
  const mathNodes = [...document.querySelectorAll(".math")].filter((el) => !el.closest("pre, code"));
  report.formulas = mathNodes.length;
  report.untypeset = mathNodes.filter((el) => !el.querySelector("mjx-container")).map(describe);
  report.typeset = document.querySelectorAll("mjx-container").length;
  report.tex_errors = [...document.querySelectorAll("mjx-merror")].map(
    (el) => (el.getAttribute("data-mjx-error") || el.textContent || "").slice(0, 120));

  // Images: load every one (lazy ones too), then check that each has pixels.
  const imgs = [...document.querySelectorAll("img")];
  await Promise.all(imgs.map((img) => {
    img.loading = "eager";
    if (img.complete) return Promise.resolve();
    return new Promise((resolve) => {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", resolve, { once: true });
      setTimeout(resolve, 10000);
    });
  }));
  report.images = imgs.length;
  report.broken_images = imgs.filter((img) => !(img.complete && img.naturalWidth > 0))
    .map((img) => img.getAttribute("src"));

  // Fonts (MathJax's own web fonts among them) must load from the book, offline.
  await document.fonts.ready;
  report.failed_fonts = [...document.fonts].filter((f) => f.status === "error").map((f) => f.family);

  // Nothing wider than the text column: tables, figures and display formulas.
  const col = article.getBoundingClientRect();
  const cs = getComputedStyle(article);
  const colLeft = col.left + parseFloat(cs.paddingLeft);
  const colRight = col.right - parseFloat(cs.paddingRight);
  report.column_px = Math.round(colRight - colLeft);
  const tol = 1.5;
  const wide = [];
  const check = (el, kind, width, left) => {
    if (!visible(el)) return;
    if (width > colRight - colLeft + tol || left < colLeft - tol || left + width > colRight + tol) {
      wide.push(`${kind} ${Math.round(width)} px wide (column ${report.column_px} px): ${describe(el)}`);
    }
  };
  for (const table of article.querySelectorAll("table")) {
    const r = table.getBoundingClientRect();
    check(table, "table", Math.max(r.width, table.scrollWidth), r.left);
  }
  for (const img of article.querySelectorAll("img")) {
    const r = img.getBoundingClientRect();
    check(img, "figure", r.width, r.left);
    // A figure larger than the column is shrunk to fit it, and its text with it.
    if (img.naturalWidth > colRight - colLeft + tol) {
      const sec = img.closest("section[id]");
      wide.push(`figure ${img.naturalWidth} px wide, shown shrunk to ${Math.round(r.width)} px ` +
                `(column ${report.column_px} px) in #${sec ? sec.id : "?"}: ${img.getAttribute("src")}`);
    }
  }
  for (const mjx of article.querySelectorAll('mjx-container[display="true"]')) {
    const inner = mjx.querySelector("mjx-math") || mjx;
    const r = inner.getBoundingClientRect();
    check(mjx, "display formula", r.width, r.left);
  }
  report.too_wide = wide;

  // Visible text outside code cells' sources and outside typeset formulas.
  const skip = "script, style, mjx-container, .cell_input, .highlight, pre.literal-block, code";
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const shown = [];  // everything a reader sees, outputs included
  const prose = [];  // the same without cell outputs
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !visible(el)) continue;
    shown.push(n.textContent);
    if (!el.closest(".cell_output")) prose.push(n.textContent);
  }
  // Cell outputs other than tables, as shown (printed text and its <pre> included).
  const outputs = [];
  const outWalker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let n = outWalker.nextNode(); n; n = outWalker.nextNode()) {
    const el = n.parentElement;
    if (!el || !el.closest(".cell_output") || el.closest("table, script, style, mjx-container") || !visible(el)) continue;
    outputs.push(n.textContent);
  }
  const shownText = shown.join(" ");
  const proseText = prose.join(" ");
  const outText = outputs.join("");
  const raw = [];
  for (const [re, what] of [
    [/\$\$/, "$$"], [/\\\(|\\\)/, "\\( or \\)"], [/\\\[|\\\]/, "\\[ or \\]"], [/\\begin\{/, "\\begin{"],
    [/\$[^$\n]{0,80}\\[A-Za-z]+[^$\n]{0,80}\$/, "$...\\command...$"],
  ]) {
    const m = shownText.match(re);
    if (m) raw.push(`${what}: "...${shownText.slice(Math.max(0, m.index - 40), m.index + 60)}..."`);
  }
  // LaTeX left in text (e.g. accents from references.bib: {\"a}), outside formulas and code.
  const latex = proseText.match(/\{\\|\\['"`^~=.cvuHk]\{?[A-Za-z]/);
  if (latex) raw.push(`LaTeX markup: "...${proseText.slice(Math.max(0, latex.index - 40), latex.index + 60)}..."`);
  report.raw_tex = raw;
  // Bibliography labels (alpha style: KPNK+19, Pla99), garbled by LaTeX in names otherwise.
  report.bad_labels = [...document.querySelectorAll(".citation .label, .citation-reference")]
    .map((el) => el.textContent.replace(/[\[\]]/g, "").trim())
    .filter((label) => label && !/^[A-Z][A-Za-z]{0,3}\+?\d{2}[a-z]?$/.test(label) && !/\d{4}/.test(label));
  const nan = [];
  for (const row of article.querySelectorAll("tr")) {
    if (visible(row) && /\bnan\b/i.test(row.innerText)) {
      const sec = row.closest("section[id]");
      nan.push(`table row in #${sec ? sec.id : "?"}: "${row.innerText.trim().replace(/\s+/g, " ").slice(0, 100)}"`);
    }
  }
  for (const line of outText.split("\n")) {
    if (/\bnan\b/i.test(line)) nan.push(`output: "${line.trim().slice(0, 100)}"`);
  }
  for (const m of proseText.matchAll(/.{0,40}\bNaN\b.{0,40}/g)) nan.push(`text: "${m[0]}"`);
  report.nan = [...new Set(nan)];

  // Tracebacks, warnings, error boxes, progress-bar debris, Sphinx problems.
  const stray = [];
  for (const el of article.querySelectorAll(
      ".output.stderr, .output.traceback, .system-message, .problematic, .output.error")) {
    if (visible(el)) stray.push(`${el.className}: ${describe(el)}`);
  }
  for (const [re, what] of [
    [/Traceback \(most recent call last\)/, "traceback"],
    [/\b[A-Z][A-Za-z]*(Warning|Error|Exception)\b:/, "warning or error message"],
    [/^\s*warnings\.warn\(/m, "warnings.warn line"],
    [/\d+%\|[^|\n]*\|/, "progress bar"],
  ]) {
    for (const [text, where] of [[outText, "output"], [proseText, "text"]]) {
      const m = text.match(re);
      if (m) stray.push(`${what} in ${where}: "${text.slice(Math.max(0, m.index - 40), m.index + 80).replace(/\s+/g, " ")}"`);
    }
  }
  report.stray = stray;

  // One search box on the page, no empty extra header bar.
  const onScreen = (el) => {
    const r = el.getBoundingClientRect();
    return visible(el) && r.width > 0 && r.height > 0 && r.right > 0 && r.left < window.innerWidth;
  };
  report.search_boxes = [...document.querySelectorAll(".search-button-field, input[type=search]")]
    .filter(onScreen).length;
  const header = document.querySelector("#pst-header");
  report.header_bar_px = header && visible(header) ? Math.round(header.getBoundingClientRect().height) : 0;
  return report;
}
