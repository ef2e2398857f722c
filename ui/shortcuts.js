// A1111's keyboard shortcuts, run once when the page loads (ui/layout.py passes this function to launch).
// Ctrl+Enter (Cmd+Enter) presses the open tab's Generate, Alt+Enter its Skip. In a prompt box, Ctrl+Up and
// Ctrl+Down raise and lower the weight of the selection, or of the bracket or word the caret is in, by 0.1 in
// A1111's (text:1.1) syntax (back to plain text at 1.0), and a LoRA tag's <lora:name:0.8> by 0.05.
() => {
  const WORD_BREAKS = " \t\r\n,.;:|()[]<>{}";

  const visibleButton = (suffix) =>
    [...document.querySelectorAll(`button[id$="_${suffix}"]`)].find((button) => button.offsetParent !== null);

  // The inside of the innermost open..close pair around the caret (its weight left out), or null.
  const enclosing = (text, caret, open, close) => {
    if (caret === 0) return null;
    const start = text.lastIndexOf(open, caret - 1);
    if (start < 0 || text.lastIndexOf(close, caret - 1) > start) return null;
    const end = text.indexOf(close, caret);
    if (end < 0) return null;
    const inside = text.slice(start + 1, end);
    const weighted = /:\s*-?[\d.]+\s*$/.test(inside) ? inside.lastIndexOf(":") : inside.length;
    return [start + 1, start + 1 + weighted];
  };

  const word = (text, caret) => {
    let start = caret;
    let end = caret;
    while (start > 0 && !WORD_BREAKS.includes(text[start - 1])) start -= 1;
    while (end < text.length && !WORD_BREAKS.includes(text[end])) end += 1;
    return [start, end];
  };

  // Changes the weight in ``box`` (direction +1 or -1); false when there is nothing to weigh.
  const reweigh = (box, direction) => {
    let text = box.value;
    let [start, end] = [box.selectionStart, box.selectionEnd];
    if (start === end) {
      [start, end] = enclosing(text, start, "<", ">") || enclosing(text, start, "(", ")") || word(text, start);
    }
    while (end > start && text[end - 1] === " ") end -= 1;
    if (start === end) return false;
    let [close, step] = [")", 0.1];
    if (text[start - 1] === "<") {
      [close, step] = [">", 0.05];
    } else if (text[start - 1] === "(" && text[end] === ")") {
      text = `${text.slice(0, end)}:1.1${text.slice(end)}`; // (text) is A1111's 1.1
    } else if (text[start - 1] !== "(" || text[end] !== ":") {
      text = `${text.slice(0, start)}(${text.slice(start, end)}:1.0)${text.slice(end)}`;
      [start, end] = [start + 1, end + 1];
    }
    const closing = text.indexOf(close, end);
    const weight = Number.parseFloat(text.slice(end + 1, closing));
    if (text[end] !== ":" || closing < 0 || Number.isNaN(weight)) return false;
    const next = Math.round((weight + direction * step) * 100) / 100;
    if (close === ")" && next === 1) {
      text = text.slice(0, start - 1) + text.slice(start, end) + text.slice(closing + 1);
      [start, end] = [start - 1, end - 1];
    } else {
      text = text.slice(0, end + 1) + (Number.isInteger(next) ? next.toFixed(1) : String(next)) + text.slice(closing);
    }
    box.value = text;
    box.setSelectionRange(start, end);
    box.dispatchEvent(new Event("input", { bubbles: true })); // Gradio reads the new value from this event
    return true;
  };

  document.addEventListener("keydown", (event) => {
    const control = event.ctrlKey || event.metaKey;
    if (event.key === "Enter" && (control || event.altKey)) {
      const button = visibleButton(control ? "generate" : "skip");
      if (button) {
        event.preventDefault();
        button.click();
      }
    } else if (control && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      const box = event.target;
      const prompt = box instanceof HTMLTextAreaElement && box.closest('[id$="prompt"]');
      if (prompt && reweigh(box, event.key === "ArrowUp" ? 1 : -1)) event.preventDefault();
    }
  });
}
