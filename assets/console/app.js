// hookrelay console: live rows, keyboard, theme, copy. The pages work without it.
// Rows arrive as server-rendered, escaped HTML; nothing here builds markup from data.
"use strict";
(function () {
  const root = document.documentElement;
  const saved = localStorage.getItem("hookrelay-theme");
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;

  function dark() {
    return root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  }

  function rows() {
    return Array.from(document.querySelectorAll("#rows tr[data-href]"));
  }

  function select(index) {
    const all = rows();
    if (!all.length) return;
    const next = Math.max(0, Math.min(all.length - 1, index));
    all.forEach((row) => row.classList.remove("selected"));
    all[next].classList.add("selected");
    all[next].scrollIntoView({ block: "nearest" });
    // The selection is part of the URL, so a shared link opens on the same row.
    history.replaceState(null, "", "#" + all[next].id);
  }

  function selected() {
    return rows().findIndex((row) => row.classList.contains("selected"));
  }

  function live(body) {
    const status = document.getElementById("live-status");
    const source = new EventSource(body.dataset.live);
    source.addEventListener("open", () => { status.textContent = "Live: new events appear as they arrive."; });
    source.addEventListener("error", () => { status.textContent = "Reconnecting…"; });
    source.addEventListener("gap", () => { status.textContent = "More events arrived than the live view shows: reload for all of them."; });
    source.addEventListener("row", (message) => {
      const parsed = new DOMParser().parseFromString(message.data, "text/html");
      const row = parsed.querySelector("tr");
      if (!row) return;
      const fresh = document.importNode(row, true);
      const existing = document.getElementById(fresh.id);
      if (existing) {
        if (existing.classList.contains("selected")) fresh.classList.add("selected");
        existing.replaceWith(fresh);
      } else {
        fresh.classList.add("fresh");
        body.prepend(fresh);
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
      }
    });
  }

  // A running job, or deliveries being attempted: the page follows them until they settle.
  function follow(box, flag) {
    if (box.dataset[flag] !== "true") return;
    setTimeout(() => { if (!document.querySelector("details[open]:focus-within, textarea:focus")) location.reload(); else follow(box, flag); }, 1500);
  }

  function refreshTimes() {
    const now = Date.now();
    document.querySelectorAll("time[datetime]").forEach((el) => {
      const at = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(at)) return;
      const secs = Math.round((now - at) / 1000);
      const abs = Math.abs(secs);
      if (abs < 3) { el.textContent = "just now"; return; }
      const amount = abs < 60 ? abs + " s" : abs < 3600 ? Math.floor(abs / 60) + " min" : abs < 86400 ? Math.floor(abs / 3600) + " h" : Math.floor(abs / 86400) + " d";
      el.textContent = secs < 0 ? "in " + amount : amount + " ago";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const body = document.getElementById("rows");
    if (body && body.dataset.live) live(body);
    if (body && location.hash.startsWith("#row-")) {
      const index = rows().findIndex((row) => "#" + row.id === location.hash);
      if (index >= 0) select(index);
    }
    const job = document.getElementById("job");
    if (job) follow(job, "running");
    const deliveries = document.getElementById("deliveries");
    if (deliveries) follow(deliveries, "settling");
    setInterval(refreshTimes, 10000);

    const theme = document.getElementById("theme");
    if (theme) theme.addEventListener("click", () => {
      root.dataset.theme = dark() ? "light" : "dark";
      localStorage.setItem("hookrelay-theme", root.dataset.theme);
    });
    const help = document.getElementById("help");
    const helpOpen = document.getElementById("help-open");
    if (help && helpOpen) helpOpen.addEventListener("click", () => help.showModal());

    document.querySelectorAll("button[data-copy]").forEach((button) => {
      button.addEventListener("click", async () => {
        const source = document.getElementById(button.dataset.copy);
        try {
          await navigator.clipboard.writeText(source.value);
          button.textContent = "Copied";
        } catch (_) {
          source.select();
          button.textContent = "Press Ctrl+C";
        }
      });
    });

    if (body) body.addEventListener("click", (event) => {
      if (event.target.closest("a, button, form")) return;
      const row = event.target.closest("tr[data-href]");
      if (row) location.assign(row.dataset.href);
    });

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.target.closest("input, select, textarea")) return;
      const index = selected();
      switch (event.key) {
        case "j": select(index + 1); break;
        case "k": select(index < 0 ? 0 : index - 1); break;
        case "Enter": {
          const row = rows()[index];
          if (row) location.assign(row.dataset.href);
          else return;
          break;
        }
        case "/": {
          const first = document.getElementById("contains") || document.querySelector("#filters input, #filters select");
          if (first) first.focus();
          break;
        }
        case "r": {
          const replay = document.querySelector("button.replay");
          if (replay) replay.click();
          else return;
          break;
        }
        case "?": if (help) help.showModal(); break;
        default: return;
      }
      event.preventDefault();
    });
  });
})();
