"""Evaluation configuration: dataclasses filled from a recipe YAML by TRL's `TrlParser`.

`python -m eval run --config recipes/configs/eval/paper.yaml --model runs/magpie_air/sft` : the model
under test is described by synth's `ModelArgs` (same engines, same keys as synthesis); the judge,
the references and each benchmark have their own prefixed keys below. Each default names its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.config import ModelArgs, check_roles, require_positive, role_args, with_roles

from .benchmarks import BENCHMARKS


@dataclass
class EvalArgs:
    output_dir: str = field(default="runs/eval", metadata={"help": "where answers, judgments and results go"})
    model_name: str | None = field(default=None, metadata={"help": "name in tables; default: from the model path"})
    row: str | None = field(default=None, metadata={
        "help": "paper Table 1 row id (eval/data/paper_table1.yaml); default: from the SFT run's dataset"})
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS),
                                  metadata={"help": f"any of {', '.join(BENCHMARKS)} (eval/benchmarks/)"})
    profile: str = field(default="paper", metadata={"help": "paper or tiny; recorded with every result"})
    seed: int = field(default=0, metadata={"help": "order randomisation (AlpacaEval) and bootstrap (Arena-Hard)"})
    report_to: str = field(default="wandb", metadata={"help": "wandb or none"})
    wandb_project: str = field(default="magpie-repro")
    wandb_group: str | None = field(default=None, metadata={"help": "default: the run folder's name"})
    rejudged_from: str | None = field(default=None, metadata={
        "help": "set by `python -m eval rejudge`: the evaluation whose answers are judged again here"})
    yes: bool = field(default=False, metadata={
        "help": "run judges whose estimated cost is above judge_max_usd (the estimate is printed either way)"})

    def __post_init__(self):
        bad = [b for b in self.benchmarks if b not in BENCHMARKS]
        if bad:
            # named by its key, as every check is: core.config.parse blames the command line or the YAML by it
            raise ValueError(f"benchmarks: unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")


EvalJudgeModel = role_args("EvalJudgeModel", "judge_", "the AlpacaEval 2 / Arena-Hard judge", engine="openai",
                           model=None, model_help="default: judge's (gpt-4.1; paper: gpt-4-1106-preview, shut down "
                           "2026-03-26); locally e.g. meta-llama/Meta-Llama-3-70B-Instruct, judge_tensor_parallel_size 4")
ReferenceModel = role_args("ReferenceModel", "reference_", "the reference model (reference: generate)",
                           inherit="the model under test", model_help="reference: generate: the model that answers")


@with_roles
@dataclass
class JudgeArgs(EvalJudgeModel):
    judge: str | None = field(default=None, metadata={
        "help": "a named judge of eval/data/judges.yaml, filling its settings where the config leaves them: gpt-4.1 "
                "(the default: AlpacaEval's weighted_alpaca_eval_gpt4.1 and Arena-Hard v2.0's judge), gpt-5-nano "
                "(about 1/100 of the cost, its own leaderboard), paper (gpt-4-1106-preview, shut down 2026-03-26: "
                "give judge_base_url of an archived deployment), llama-3.3-70b (vLLM, 4 GPUs), smollm2-135m (tiny)"})
    judge_prefill: str = field(default="none", metadata={"help": "none (paper) or label: reply prefilled up to the verdict"})
    judge_batch_size: int = field(default=16, metadata={"help": "judgments per call and per resumable shard"})
    alpaca_annotator: str | None = field(default=None, metadata={
        "help": "engine: the judge above on AlpacaEval's prompt; or an alpaca_eval annotator config run by the "
                "alpaca_eval package, e.g. weighted_alpaca_eval_gpt4.1 (judge's default) or "
                "weighted_alpaca_eval_gpt4_turbo (the paper's); default: judge's, or engine when judge_model is given"})
    alpaca_top_logprobs: int = field(default=5, metadata={
        "help": "weighted judge: top log-probabilities of its one token (weighted_alpaca_eval_gpt4.1: 5)"})
    arena_judge_max_tokens: int = field(default=4096, metadata={"help": "Arena-Hard v0.1 judge config: 4096"})
    arena_judge_prompt_file: str | None = field(default=None, metadata={
        "help": "YAML with system_prompt and prompt_template ({QUESTION} {ANSWER_A} {ANSWER_B}); default: ours"})
    judge_tokenizer: str | None = field(default=None, metadata={
        "help": "what counts the judge's tokens for the cost estimate, e.g. the model a server of your own serves "
                "under another name; default: the judge model's own tokenizer where it loads, else tiktoken's"})
    judge_prices: str | None = field(default=None, metadata={
        "help": "price table of judge models (USD per million tokens); default: eval/data/judge_prices.yaml (dated)"})
    judge_max_usd: float = field(default=10.0, metadata={
        "help": "an evaluation whose judges are estimated to cost more asks for --yes before any paid call"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "judge_batch_size", "alpaca_top_logprobs", "arena_judge_max_tokens")
        from dataclasses import fields

        from .judges import DEFAULT_JUDGE, IDENTITY, judge_named

        preset = judge_named(self.judge or DEFAULT_JUDGE)["settings"]
        defaults = {f.name: f.default for f in fields(self)}
        if self.judge:
            for key in IDENTITY:
                given = getattr(self, key)
                if given not in (None, defaults[key], preset.get(key)) and not (key == "alpaca_annotator"
                                                                                  and given == "engine"):
                    raise ValueError(f"judge {self.judge} means {key} {preset.get(key)}, but {key} is {given!r}; "
                                     "give one of the two")
            # the named judge's settings wherever the config left the default
            for key, value in preset.items():
                if getattr(self, key) == defaults[key]:
                    setattr(self, key, value)
        # No name: the default judge's model, unless the config names a judge model of its own, which then judges
        # AlpacaEval too (on AlpacaEval's weighted prompt) unless told otherwise.
        own = self.judge_model is not None and not self.judge
        self.alpaca_annotator = self.alpaca_annotator or ("engine" if own else preset["alpaca_annotator"])
        self.judge_model = self.judge_model or preset["judge_model"]
        require_positive(self, "judge_max_usd")

    def role(self):
        """The judge's ModelRole; an hf judge batches judge_batch_size rows unless judge_hf_batch_size says."""
        role = self.judge_role()
        return role if role.hf_batch_size else role.replace(hf_batch_size=self.judge_batch_size)


@with_roles
@dataclass
class BenchArgs(ReferenceModel):
    alpaca_prompts: str = field(default="hub", metadata={"help": "hub (tatsu-lab/alpaca_eval, 805), tiny, or a .jsonl/.json"})
    alpaca_max_tokens: int = field(default=4096, metadata={"help": "answer length cap (paper: 4096 for responses)"})
    alpaca_repetition_penalty: float = field(default=1.2, metadata={"help": "paper: greedy with repetition penalty 1.2"})
    alpaca_limit: int | None = field(default=None, metadata={"help": "first N prompts only (smoke runs)"})
    arena_questions: str = field(default="hub", metadata={
        "help": "hub (arena_version v0.1: 500 questions, v2.0: 750), tiny (eval/data: 16, v2.0: 8), or a .jsonl"})
    arena_max_tokens: int = field(default=4096, metadata={"help": "Arena-Hard gen_answer config: 4096, temperature 0"})
    arena_limit: int | None = field(default=None, metadata={"help": "first N questions only (smoke runs)"})
    arena_bootstrap_rounds: int = field(default=100, metadata={"help": "Arena-Hard show_result: 100"})
    arena_version: str = field(default="v0.1", metadata={
        "help": "v0.1 (the paper's: 500 questions vs gpt-4-0314, show_result.py of 2024) or v2.0 (arena-hard-auto "
                "2025-04: 750 questions, one score per category, hard_prompt vs o3-mini-2025-01-31 and "
                "creative_writing vs gemini-2.0-flash-001)"})
    arena_control_features: list[str] = field(default_factory=list, metadata={
        "help": "style control as arena-hard-auto's show_result.py --control-features: any of length, markdown. "
                "It corrects for the style of the models scored together: `eval run` scores one model (against its "
                "own average style); compare models with python -m eval arena -f length markdown"})
    arena_control_fit: str = field(default="show_result", metadata={
        "help": "style control's fit: show_result (arena-hard-auto show_result.py's own 50 float32 L-BFGS steps, "
                "whose numbers its leaderboards print) or converged (the maximum-likelihood fit: 0.04 to 0.26 points "
                "away on 4 models x 60 random questions, 1.3 where style all but decides the verdicts)"})
    wildbench_prompts: str = field(default="hub", metadata={
        "help": "WildBench v2 tasks: hub (allenai/WildBench, config v2: 1024), tiny (eval/data: 8), or a .jsonl in its "
                "layout"})
    wildbench_max_tokens: int = field(default=4096, metadata={
        "help": "WildBench's answers: greedy, 4096 tokens (its scripts/_common_vllm.sh)"})
    wildbench_limit: int | None = field(default=None, metadata={"help": "first N tasks only (smoke runs)"})
    reference: str = field(default="hub", metadata={
        "help": "hub: gpt4_turbo (AlpacaEval 2) and gpt-4-0314 (Arena-Hard) answers; generate: answers of reference_model"})
    references_dir: str = field(default="runs/references", metadata={
        "help": "generated references, shared by every model evaluated against them"})
    answer_batch_size: int = field(default=64, metadata={"help": "answers per call and per resumable shard"})

    def __post_init__(self):
        check_roles(self)
        require_positive(self, "alpaca_max_tokens", "arena_max_tokens", "arena_bootstrap_rounds", "answer_batch_size",
                         "wildbench_max_tokens")
        from .arena import CONTROL_FEATURES, CONTROL_FITS, VERSIONS

        if self.arena_version not in VERSIONS:
            raise ValueError(f"arena_version must be one of {', '.join(VERSIONS)}, got {self.arena_version!r}")
        bad = [f for f in self.arena_control_features if f not in CONTROL_FEATURES]
        if bad or isinstance(self.arena_control_features, str):
            raise ValueError(f"arena_control_features must be a list of {', '.join(CONTROL_FEATURES)}, "
                             f"got {self.arena_control_features!r}")
        if self.arena_control_fit not in CONTROL_FITS:
            raise ValueError(f"arena_control_fit must be one of {', '.join(CONTROL_FITS)}, "
                             f"got {self.arena_control_fit!r}")
        if self.reference not in ("hub", "generate"):
            raise ValueError(f"reference must be hub or generate, got {self.reference!r}")
        if self.reference == "generate" and not self.reference_model:
            raise ValueError("reference: generate needs reference_model (the model whose answers are the baseline)")


@dataclass
class HarnessArgs:
    lm_eval_tasks: list[str] = field(default_factory=lambda: ["magpie_paper"], metadata={
        "help": "lm-eval task or group names; magpie_paper (eval/tasks/): Table 3 with its shots, plus ifeval"})
    lm_eval_include_path: str | None = field(default=None, metadata={
        "help": "folder of extra lm-eval YAML tasks (eval/tasks/ is always included)"})
    lm_eval_num_fewshot: int | None = field(default=None, metadata={"help": "default: each task's own"})
    lm_eval_limit: float | None = field(default=None, metadata={"help": "examples per task (smoke runs)"})
    lm_eval_batch_size: str = field(default="auto", metadata={"help": "lm-eval batch size (auto on GPU)"})
    lm_eval_backend: str | None = field(default=None, metadata={"help": "hf or vllm; default: the model's engine"})
    lm_eval_apply_chat_template: bool = field(default=True, metadata={"help": "chat models are evaluated in chat form"})
    lm_eval_model_args: str | None = field(default=None, metadata={
        "help": "extra backend arguments, k=v,k=v or JSON, e.g. data_parallel_size=4 (vLLM data parallel)"})


ALL = (ModelArgs, EvalArgs, JudgeArgs, BenchArgs, HarnessArgs)
