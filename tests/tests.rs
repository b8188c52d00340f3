//! End-to-end tests of the real `molt` binary: one test binary (like ripgrep's), modules by
//! theme, fixtures in `util.rs`, a real HTTP server on 127.0.0.1 in `server.rs`, hostile
//! repositories crafted in `craft.rs`.

mod craft;
mod server;
mod util;

mod cli;
mod crash;
mod deltas;
mod documents;
mod eio;
mod formats;
mod full_disk;
mod fuzz_seeds;
mod http;
mod lifecycle;
mod links;
mod ownership;
mod plugins;
mod powercut;
mod props;
mod recovery;
mod rejections;
mod setup;
