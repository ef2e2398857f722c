// A1111's Generate forever, run once when the page loads (ui/layout.py passes it to launch). Right-click a
// generation tab's Generate for a menu that starts it (Generate is pressed at once) or cancels it; while it is on,
// the button is outlined and every job that ends well presses it again (the page hears of a job's end from the
// "easel-job-end" event that ui/common.py dispatches): an error ends it. Interrupt ends the current job only, as in
// A1111.
() => {
  const TABS = ["txt2img", "img2img", "inpaint"];
  const running = new Set();
  let menu = null;

  const generateButton = (tab) => document.getElementById(`${tab}_generate`);
  const closeMenu = () => {
    menu?.remove();
    menu = null;
  };
  const show = (tab) => {
    const button = generateButton(tab);
    button?.classList.toggle("easel-forever", running.has(tab));
    if (button) button.title = running.has(tab) ? "Generating forever: right-click to cancel" : "";
  };
  const setRunning = (tab, on) => {
    if (on) running.add(tab);
    else running.delete(tab);
    show(tab);
  };

  document.addEventListener("easel-job-end", (event) => {
    const { tab, ok } = event.detail;
    if (!ok) setRunning(tab, false);
    // a moment's pause, so that a cancel clicked as a job ends is not overtaken by the next job
    else if (running.has(tab)) setTimeout(() => running.has(tab) && generateButton(tab)?.click(), 300);
  });

  document.addEventListener("contextmenu", (event) => {
    const tab = TABS.find((name) => event.target.closest?.(`#${name}_generate`));
    if (!tab) return;
    event.preventDefault();
    closeMenu();
    menu = document.createElement("div");
    menu.id = "easel_generate_menu";
    menu.className = "easel-menu";
    menu.style.left = `${event.pageX}px`;
    menu.style.top = `${event.pageY}px`;
    const item = document.createElement("button");
    item.textContent = running.has(tab) ? "Cancel generate forever" : "Generate forever";
    item.addEventListener("click", () => {
      closeMenu();
      const start = !running.has(tab);
      setRunning(tab, start);
      if (start) generateButton(tab)?.click();
    });
    menu.append(item);
    document.body.append(menu);
  });
  // a press elsewhere closes the menu (a pointer's, not the click that presses Generate again)
  document.addEventListener("pointerdown", (event) => {
    if (menu && !menu.contains(event.target)) closeMenu();
  });
  document.addEventListener("keydown", (event) => event.key === "Escape" && closeMenu());
}
