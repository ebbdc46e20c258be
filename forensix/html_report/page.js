"use strict";
// forensix's report page: filter, sort and page through the rows; a detail view of one image.
// Every string from a row is untrusted and is written with textContent, never as HTML. The view's
// state lives in the address's fragment (#verdict=fake&sort=score-desc&page=2&open=17), so a view
// can be bookmarked and Back closes what was opened.
(() => {
  const data = JSON.parse(document.getElementById("rows").textContent);
  // A row's empty fields are left out of the page's data: they are filled in here.
  const EMPTY = { member: "", sha256: "", score: null, threshold: null, band_low: null, model: "", size: "", format: "", notes: "",
    error: "", source: "", source_score: null, mask_fraction: null, provenance: [], has_provenance: false,
    picture: null, mask_picture: null, missing: "" };
  const rows = data.rows.map((r) => ({ ...EMPTY, ...r }));
  const picture = (kind, name) => (name ? data.files + "/" + kind + "/" + name + ".jpg" : null);
  const thumb = (name) => picture("thumb", name);
  const preview = (name) => picture(data.previews ? "preview" : "thumb", name);
  const PAGE_SIZE = 100;
  const $ = (id) => document.getElementById(id);
  const cards = $("cards");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null && text !== "") node.textContent = String(text);
    return node;
  }

  function readState() {
    const p = new URLSearchParams(location.hash.slice(1));
    const open = parseInt(p.get("open"), 10);
    return {
      q: p.get("q") || "",
      verdict: p.get("verdict") || "",
      prov: p.get("prov") === "1",
      sort: p.get("sort") || "order",
      group: p.get("group") || "",
      page: Math.max(1, parseInt(p.get("page"), 10) || 1),
      open: Number.isInteger(open) && open >= 0 && open < rows.length ? open : null,
    };
  }

  function fragment(s) {
    const p = new URLSearchParams();
    if (s.q) p.set("q", s.q);
    if (s.verdict) p.set("verdict", s.verdict);
    if (s.prov) p.set("prov", "1");
    if (s.sort !== "order") p.set("sort", s.sort);
    if (s.group) p.set("group", s.group);
    if (s.page > 1) p.set("page", String(s.page));
    if (s.open !== null) p.set("open", String(s.open));
    return "#" + p.toString();
  }

  // Change the view: a new history entry (Back undoes it), or, while typing a search, the same one.
  function go(changes, replace) {
    const next = fragment({ ...readState(), ...changes });
    if (next === location.hash || (next === "#" && !location.hash)) return;
    if (replace) {
      history.replaceState(null, "", next);
      render();
    } else {
      location.hash = next;
    }
  }

  const byScore = (sign) => (a, b) => {
    if (a.score === null || b.score === null) return (a.score === null) - (b.score === null) || a.i - b.i;
    return sign * (a.score - b.score) || a.i - b.i;
  };
  const SORTS = {
    order: (a, b) => a.i - b.i,
    "score-desc": byScore(-1),
    "score-asc": byScore(1),
    path: (a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.member < b.member ? -1 : a.member > b.member ? 1 : a.i - b.i),
  };

  let shown = { key: null, list: rows };
  function selected(s) {
    const key = JSON.stringify([s.q, s.verdict, s.prov, s.group, s.sort]);
    if (shown.key === key) return shown.list;
    const q = s.q.toLowerCase();
    const list = rows.filter(
      (r) =>
        (!s.verdict || r.verdict === s.verdict) &&
        (!s.prov || r.has_provenance) &&
        (!s.group || r.group === s.group) &&
        (!q || r.path.toLowerCase().includes(q) || r.member.toLowerCase().includes(q)),
    );
    list.sort(SORTS[s.sort] || SORTS.order);
    shown = { key, list };
    return list;
  }

  const name = (r) => (r.member ? r.member + " in " + r.path : r.path);
  const scoreText = (score) => (score === null ? "no score" : score.toFixed(3));

  function scoreBar(r) {
    const bar = el("div", "bar");
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", "score " + scoreText(r.score) + (r.threshold === null ? "" : ", threshold " + r.threshold));
    if (r.score !== null) {
      const fill = el("div", "fill v-" + r.verdict);
      fill.style.width = (100 * Math.min(Math.max(r.score, 0), 1)).toFixed(1) + "%";
      bar.append(fill);
    }
    if (r.threshold !== null) {
      const mark = el("div", "mark");
      mark.style.left = (100 * Math.min(Math.max(r.threshold, 0), 1)).toFixed(1) + "%";
      bar.append(mark);
    }
    return bar;
  }

  function thumbnail(src, why) {
    if (src) {
      const img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = "";
      img.src = src;
      return img;
    }
    return el("span", "nopicture", why || "no picture");
  }

  function card(r, s) {
    const item = el("article", "card v-" + r.verdict);
    item.dataset.index = String(r.i);
    const link = el("a", "open");
    link.href = fragment({ ...s, open: r.i });
    link.setAttribute("aria-label", r.verdict + ", " + scoreText(r.score) + ": " + name(r));
    const frame = el("div", "thumb");
    frame.append(thumbnail(thumb(r.picture), r.verdict === "error" ? "unreadable" : r.missing));
    if (r.mask_picture) frame.append(el("span", "has-mask", "mask"));
    link.append(frame);
    item.append(link);
    const head = el("p", "head");
    head.append(el("span", "verdict v-" + r.verdict, r.verdict), el("span", "score", scoreText(r.score)));
    item.append(head, scoreBar(r), el("p", "name", name(r)));
    if (r.source) item.append(el("p", "source", "source: " + r.source + (r.source_score === null ? "" : " (" + r.source_score.toFixed(2) + ")")));
    if (r.error) item.append(el("p", "error", r.error));
    else if (r.notes) item.append(el("p", "notes", r.notes));
    return item;
  }

  function render() {
    const s = readState();
    $("q").value === s.q || ($("q").value = s.q);
    $("verdict").value = s.verdict;
    $("prov").checked = s.prov;
    $("sort").value = s.sort in SORTS ? s.sort : "order";
    $("group-filter").hidden = !s.group;
    $("group-name").textContent = s.group;
    const list = selected(s);
    const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    const page = Math.min(s.page, pages);
    const first = (page - 1) * PAGE_SIZE;
    const slice = list.slice(first, first + PAGE_SIZE);
    cards.replaceChildren(...slice.map((r) => card(r, { ...s, page })));
    const of = list.length === rows.length ? "" : " (of " + rows.length.toLocaleString("en") + ")";
    $("status").textContent = list.length
      ? "Showing " + (first + 1).toLocaleString("en") + "–" + (first + slice.length).toLocaleString("en") + " of " + list.length.toLocaleString("en") + of
      : "No image matches" + of + ".";
    $("page").textContent = "page " + page + " of " + pages;
    $("prev").disabled = page <= 1;
    $("next").disabled = page >= pages;
    showDetail(s, list);
    document.body.dataset.ready = "1";
    // The address now shown: a hash change renders a task later (hashchange), and a test waits for it.
    document.body.dataset.shown = location.hash;
  }

  let opener = null;
  function showDetail(s, list) {
    const dialog = $("detail");
    if (s.open === null) {
      if (!dialog.hidden) {
        dialog.hidden = true;
        document.body.classList.remove("detail-open");
        const back = opener && cards.querySelector('[data-index="' + opener + '"] a');
        if (back) back.focus();
      }
      return;
    }
    const r = rows[s.open];
    opener = r.i;
    $("detail-name").textContent = name(r);
    $("detail-img").removeAttribute("src");
    $("detail-mask-img").removeAttribute("src");
    if (r.picture) $("detail-img").src = preview(r.picture);
    $("detail-image").hidden = !r.picture;
    if (r.mask_picture) $("detail-mask-img").src = preview(r.mask_picture);
    $("detail-mask").hidden = !r.mask_picture;
    $("detail-mask-figure").hidden = !r.mask_picture || $("detail-mask").getAttribute("aria-pressed") !== "true";
    $("detail-missing").textContent = r.picture
      ? ""
      : r.verdict === "error"
        ? "unreadable: " + r.error
        : "no picture: " + (r.missing || "none made");
    const fields = [
      ["verdict", r.verdict],
      ["score, P(fake)", scoreText(r.score)],
      ["threshold", r.threshold],
      ["uncertain band", r.band_low === null ? "" : "[" + r.band_low + ", " + r.threshold + ")"],
      ["model", r.model],
      ["source", r.source ? r.source + (r.source_score === null ? "" : " (" + r.source_score.toFixed(3) + ")") : ""],
      ["mask fraction", r.mask_fraction === null ? "" : r.mask_fraction.toFixed(3)],
      ["error", r.error],
      ["notes", r.notes],
      ...r.provenance,
      ["size", r.size],
      ["format", r.format],
      ["path", r.path],
      ["member", r.member],
      ["sha256", r.sha256],
    ];
    const dl = $("detail-fields");
    dl.replaceChildren();
    for (const [label, value] of fields) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", "", label), el("dd", label === "error" ? "error" : "", value));
    }
    const at = list.findIndex((x) => x.i === r.i);
    $("detail-prev").disabled = at <= 0;
    $("detail-next").disabled = at < 0 || at >= list.length - 1;
    if (dialog.hidden) {
      dialog.hidden = false;
      document.body.classList.add("detail-open");
      $("detail-close").focus();
    }
  }

  // The image before or after the open one, in the order shown; the page follows it.
  function step(delta) {
    const s = readState();
    const list = selected(s);
    const at = list.findIndex((x) => x.i === s.open);
    const next = list[at + delta];
    if (at >= 0 && next) go({ open: next.i, page: Math.floor((at + delta) / PAGE_SIZE) + 1 });
  }

  function moveFocus(delta) {
    const links = [...cards.querySelectorAll("a.open")];
    const at = links.indexOf(document.activeElement);
    const next = links[at < 0 ? 0 : Math.min(Math.max(at + delta, 0), links.length - 1)];
    if (next) next.focus();
  }

  $("q").addEventListener("input", (e) => go({ q: e.target.value, page: 1, open: null }, true));
  $("verdict").addEventListener("change", (e) => go({ verdict: e.target.value, page: 1 }));
  $("prov").addEventListener("change", (e) => go({ prov: e.target.checked, page: 1 }));
  $("sort").addEventListener("change", (e) => go({ sort: e.target.value, page: 1 }));
  $("group-clear").addEventListener("click", () => go({ group: "", page: 1 }));
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  $("prev").addEventListener("click", () => go({ page: readState().page - 1 }));
  $("next").addEventListener("click", () => go({ page: readState().page + 1 }));
  $("detail-close").addEventListener("click", () => go({ open: null }));
  $("detail-prev").addEventListener("click", () => step(-1));
  $("detail-next").addEventListener("click", () => step(1));
  $("detail-mask").addEventListener("click", (e) => {
    const pressed = e.currentTarget.getAttribute("aria-pressed") !== "true";
    e.currentTarget.setAttribute("aria-pressed", String(pressed));
    render();
  });
  document.querySelectorAll("a[data-group]").forEach((a) =>
    a.addEventListener("click", (e) => {
      e.preventDefault();
      go({ group: a.dataset.group, page: 1, open: null });
    }),
  );
  document.querySelectorAll("a[data-verdict]").forEach((a) =>
    a.addEventListener("click", (e) => {
      e.preventDefault();
      go({ verdict: a.dataset.verdict, page: 1, open: null });
    }),
  );
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
    const open = readState().open !== null;
    if (e.key === "Escape") {
      if (open) go({ open: null });
      else if (typing) e.target.blur();
      return;
    }
    if (typing) return;
    const keys = open
      ? { ArrowLeft: () => step(-1), ArrowRight: () => step(1), m: () => $("detail-mask").hidden || $("detail-mask").click() }
      : {
          "/": () => $("q").focus(),
          j: () => moveFocus(1),
          k: () => moveFocus(-1),
          ArrowLeft: () => $("prev").disabled || $("prev").click(),
          ArrowRight: () => $("next").disabled || $("next").click(),
        };
    if (keys[e.key]) {
      e.preventDefault();
      keys[e.key]();
    }
  });
  window.addEventListener("hashchange", render);
  render();
})();
