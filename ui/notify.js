// A1111's browser notifications, run once when the page loads (ui/layout.py passes it to launch). The 🔔 button
// beside the model picker asks the browser for leave to notify; from then on a generation job that ends while the
// page is in the background (another window or tab has the focus) shows a notification: how many pictures it made,
// the first as its picture, or that it failed. Clicking the notification brings the page back. A job's end is the
// "easel-job-end" event that ui/common.py dispatches, with the gallery the job left. A1111's notification sound
// (notification.mp3, ui/layout.py) plays at every job's end while its setting is on.
() => {
  const BUTTON = "request_notifications";
  const supported = "Notification" in window;

  const describe = () => {
    const button = document.getElementById(BUTTON);
    if (!button) return;
    const state = supported ? Notification.permission : "unsupported";
    button.title = {
      granted: "Notifications on: a job that ends while this page is in the background says so",
      denied: "Notifications are blocked for this page in the browser's settings",
      unsupported: "This browser cannot show notifications",
    }[state] || "Notify me when a job ends while this page is in the background";
  };
  // the button is Gradio's: wait for it when the app has not rendered yet
  if (document.getElementById(BUTTON)) describe();
  else {
    new MutationObserver((_, observer) => {
      if (document.getElementById(BUTTON)) {
        describe();
        observer.disconnect();
      }
    }).observe(document.body, { childList: true, subtree: true });
  }

  document.addEventListener("click", (event) => {
    if (supported && event.target.closest?.(`#${BUTTON}`)) Notification.requestPermission().then(describe);
  });

  document.addEventListener("easel-job-end", () => {  // A1111's sound, after every job, in front or not
    const sound = document.getElementById("easel_notification_sound");
    if (!sound || sound.dataset.play !== "true") return;
    sound.volume = Number(sound.dataset.volume);
    sound.currentTime = 0;
    sound.play().catch(() => {});  // a browser that plays nothing before the user has clicked: no sound
  });

  document.addEventListener("easel-job-end", (event) => {
    if (!supported || Notification.permission !== "granted") return;
    if (document.visibilityState === "visible" && document.hasFocus()) return;
    const { tab, ok, gallery, grid } = event.detail;
    const pictures = (gallery || []).filter((item) => item.caption !== grid);
    const count = pictures.length;
    const body = !ok ? `${tab}: the job failed; the page says why`
      : `${tab}: ${count === 0 ? "no picture" : count === 1 ? "1 picture" : `${count} pictures`}`;
    const url = pictures[0]?.image?.url;
    const notification = new Notification("Easel", url ? { body, icon: url, image: url } : { body });
    notification.onclick = () => {
      window.focus();
      notification.close();
    };
  });
}
