// The reverse-process player (the js_on_load of its gr.HTML, see ui/reverse.py; `element` is the player's HTML).
// Every frame is already in the page, one <figure class="frame"> each, all but one hidden (ui/rendering.py,
// player_html): playing just shows them one after another, in the browser, so it costs the server nothing.
// The page's frame slider (#scrubber) follows the player, and calls window.reversePlayer.show(i) when dragged.
let shown = 0;       // the index of the frame on show
let timer = null;    // setInterval's id while playing

const frames = () => element.querySelectorAll(".frame");
const control = (name) => element.querySelector(`[name="${name}"]`);

function show(i) {
  const all = frames();
  if (!all.length) return;
  const next = Math.max(0, Math.min(all.length - 1, i));
  if (all[shown]) all[shown].hidden = true;
  all[next].hidden = false;
  shown = next;
  // the slider under the player shows where we are (its value only: nothing is sent to the server)
  for (const input of document.querySelectorAll("#scrubber input")) {
    input.value = String(next);
    if (input.type === "range") input.style.setProperty("--range_progress", `${(100 * next) / (all.length - 1)}%`);
  }
}

function pause() {
  clearInterval(timer);
  timer = null;
  const button = element.querySelector("[data-action=play]");
  if (button) button.textContent = "▶ Play";
}

function play() {
  const last = frames().length - 1;
  if (last < 1) return;
  if (shown >= last) show(0);  // at the end: play from the start
  clearInterval(timer);
  timer = setInterval(() => {
    if (!element.checkVisibility({ visibilityProperty: true })) pause();  // a new run, or another tab, hides it
    else if (shown < last) show(shown + 1);
    else if (control("loop").checked) show(0);
    else pause();
  }, 1000 / Number(control("fps").value));
  element.querySelector("[data-action=play]").textContent = "❚❚ Pause";
}

element.addEventListener("click", (event) => {
  const action = event.target.closest("[data-action]")?.dataset.action;
  if (action === "play") timer ? pause() : play();
  if (action === "back") { pause(); show(shown - 1); }
  if (action === "forward") { pause(); show(shown + 1); }
});

element.addEventListener("input", (event) => {
  if (event.target.name !== "fps") return;
  event.target.nextElementSibling.textContent = event.target.value;  // the <output> beside the speed slider
  if (timer) play();  // restart at the new speed
});

// A new run's frames: start from x_T and play them all once.
function start() {
  pause();
  shown = 0;
  frames().forEach((frame, i) => { frame.hidden = i !== 0; });
  if (element.querySelector(".player[data-autoplay]")) play();
}

window.reversePlayer = { show: (i) => { pause(); show(Number(i)); } };
watch("value", start);
start();
