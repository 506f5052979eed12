// What the page keeps in this browser's local storage: the token and the settings.

const TOKEN_KEY = "chat.token";
const SETTINGS_KEY = "chat.settings";

/** The stored token, or "". */
export function loadToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

/** Store the token (an empty one is removed). */
export function saveToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/**
 * A token handed over in the address as #token=..., stored, and removed from the address bar.
 * The fragment never reaches a server, so the token is in no access log; it is removed so
 * that it stays out of the history, bookmarks and screen shares too.
 */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("token")) return "";
  const token = params.get("token").trim();
  history.replaceState(null, "", location.pathname + location.search);
  if (token) saveToken(token);
  return token;
}

/** The stored settings: an object of field name to string value. */
export function loadSettings() {
  try {
    const settings = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
    return settings && typeof settings === "object" ? settings : {};
  } catch {
    return {};
  }
}

/** Store the settings object. */
export function saveSettings(settings) {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}
