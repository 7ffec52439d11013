// The search page: text search, "more like this person", and a larger view of a result.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const form = $("search-form"), q = $("q"), k = $("k");
  const status = $("status"), notice = $("notice"), results = $("results");
  const viewer = $("viewer"), viewerImg = $("viewer-img"), viewerPath = $("viewer-path");
  let viewed = null;

  function setStatus(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  fetch("/api/info").then((r) => r.json()).then((info) => {
    k.max = info.max_k;
    q.maxLength = info.max_query_chars;
    setStatus(info.count + " images indexed" + (info.checkpoint ? " (model " + info.checkpoint + ")" : ""));
  }).catch(() => {});

  function openViewer(hit) {
    viewed = hit;
    viewerImg.src = hit.url;
    viewerImg.alt = hit.path;
    viewerPath.textContent = hit.path + "  (#" + hit.rank + ", score " + hit.score.toFixed(3) + ")";
    viewer.showModal();
  }

  function card(hit) {
    const div = document.createElement("div");
    div.className = "card";
    div.dataset.rank = hit.rank;
    div.dataset.index = hit.index;
    const img = document.createElement("img");
    img.src = hit.url;
    img.alt = hit.path;
    img.loading = "lazy";
    img.title = "larger view";
    img.addEventListener("click", () => openViewer(hit));
    const meta = document.createElement("div");
    meta.className = "score";
    meta.textContent = "#" + hit.rank + " · " + hit.score.toFixed(3);
    const name = document.createElement("div");
    name.className = "name";
    name.title = hit.path;
    name.textContent = hit.path.split("/").pop();
    const like = document.createElement("button");
    like.type = "button";
    like.className = "like";
    like.textContent = "more like this";
    like.addEventListener("click", () => similar(hit));
    div.append(img, meta, name, like);
    return div;
  }

  async function show(url, describe) {
    setStatus("searching…", false);
    notice.textContent = "";
    try {
      const t0 = performance.now();
      const resp = await fetch(url);
      const data = await resp.json();
      if (!resp.ok) {
        results.replaceChildren();
        setStatus(data.error || ("error " + resp.status), true);
        return;
      }
      results.replaceChildren(...data.results.map(card));
      const ms = Math.round(performance.now() - t0);
      setStatus(data.results.length + " " + describe(data) + " in " + ms + " ms", false);
      if (data.ignored_words && data.ignored_words.length) {
        notice.textContent = "ignored (unknown to the model): " + data.ignored_words.join(", ");
      }
    } catch (err) {
      setStatus("the server did not answer: " + err, true);
    }
  }

  function similar(hit) {
    if (viewer.open) viewer.close();
    const params = new URLSearchParams({ i: String(hit.index), k: k.value || "10" });
    show("/api/similar?" + params.toString(), (d) => "images like " + d.path);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams({ q: q.value, k: k.value || "10" });
    show("/api/search?" + params.toString(), (d) => "results for “" + d.query + "”");
  });
  $("viewer-close").addEventListener("click", () => viewer.close());
  $("viewer-like").addEventListener("click", () => { if (viewed) similar(viewed); });
})();
