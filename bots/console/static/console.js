// Loa organiser console: image zoom, keyboard shortcuts, quick rejection reasons.
// Everything works without this script; it only adds comfort.
(function () {
  "use strict";

  // -- tap an evidence image to see it full size (tap again: actual pixels) --------------------
  var box = document.querySelector(".lightbox");
  var boxImg = box && box.querySelector("img");
  function openBox(src, alt) {
    if (!box) return false;
    boxImg.src = src;
    boxImg.alt = alt || "";
    box.classList.remove("full");
    box.hidden = false;
    box.querySelector(".close").focus();
    return true;
  }
  function closeBox() {
    if (!box || box.hidden) return false;
    box.hidden = true;
    boxImg.removeAttribute("src");
    return true;
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.zoom");
    if (link && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
      var img = link.querySelector("img");
      if (openBox(link.href, img ? img.alt : "")) event.preventDefault();
      return;
    }
    if (box && !box.hidden) {
      if (event.target === boxImg) box.classList.toggle("full");
      else closeBox();
    }
    var chip = event.target.closest && event.target.closest(".chip-button[data-reason]");
    if (chip) {
      var area = chip.closest("form").querySelector("textarea[name=reason]");
      area.value = chip.getAttribute("data-reason");
      area.focus();
    }
  });

  // -- keyboard: j/k next/previous item, a approve, r reject ----------------------------------------
  var items = Array.prototype.slice.call(document.querySelectorAll(".item[data-decidable]"));
  var current = -1;
  function focusItem(index) {
    if (!items.length) return;
    index = Math.max(0, Math.min(items.length - 1, index));
    if (current >= 0 && items[current]) items[current].classList.remove("focused");
    current = index;
    var item = items[current];
    item.classList.add("focused");
    item.focus({ preventScroll: true });
    item.scrollIntoView({ block: "start", behavior: "smooth" });
  }
  // Open on the item the server pointed at (#item-N), else the first one still pending.
  (function () {
    var target = location.hash && document.querySelector(location.hash);
    var index = items.indexOf(target);
    if (index < 0) index = items.findIndex(function (el) { return el.hasAttribute("data-pending"); });
    if (index >= 0 && items.length) {
      current = index;
      items[index].classList.add("focused");
    }
  })();
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (closeBox()) { event.preventDefault(); return; }
      if (document.activeElement && /^(TEXTAREA|INPUT|SELECT)$/.test(document.activeElement.tagName)) {
        document.activeElement.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var tag = document.activeElement ? document.activeElement.tagName : "";
    if (/^(TEXTAREA|INPUT|SELECT)$/.test(tag) || !items.length) return;
    var item = items[current];
    switch (event.key) {
      case "j": focusItem(current + 1); break;
      case "k": focusItem(current < 0 ? 0 : current - 1); break;
      case "a":
        if (!item) { focusItem(0); break; }
        var approve = item.querySelector("button[value=accept]");
        if (approve) approve.click();
        break;
      case "r":
        if (!item) { focusItem(0); item = items[current]; }
        var details = item.querySelector("details.reject");
        if (details) {
          details.open = true;
          details.querySelector("textarea").focus();
        }
        break;
      default: return;
    }
    event.preventDefault();
  });
})();
