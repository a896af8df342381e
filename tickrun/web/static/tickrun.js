// tickrun web: the page's only script. It asks before destructive actions and keeps
// "3 min ago" current; every page works without it.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});

function span(seconds) {
  const s = Math.round(Math.abs(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return m ? h + " h " + m + " min" : h + " h";
  }
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  return h ? d + " d " + h + " h" : d + " d";
}

function refresh() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-rel]")) {
    const delta = (Date.parse(el.getAttribute("data-rel")) - now) / 1000;
    if (Number.isNaN(delta)) continue;
    el.textContent = Math.abs(delta) < 1 ? "just now" : delta > 0 ? "in " + span(delta) : span(delta) + " ago";
  }
}
setInterval(refresh, 15000);
