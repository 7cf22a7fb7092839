/* global process */
// Loaded first in each ava worker by `npm run sanitize` (.ci/sanitize). The worker itself was
// started with the sanitizer runtimes preloaded (the addon's ASan/UBSan build needs them first in
// the process); the system tools and helper programs a test starts (ip, nft, echo servers) do
// not, and preloading ASan into each of them made every spawn slow enough that synchronous
// set-up calls stalled the other tests' event loops past their deadlines. A test that starts a
// Node child which loads the addon gives it the runtimes back (nodeChildEnv,
// test/helpers/child-env.ts).
if (process.env.LD_PRELOAD) process.env.AMBIT_SANITIZE_LD_PRELOAD = process.env.LD_PRELOAD;
delete process.env.LD_PRELOAD;
