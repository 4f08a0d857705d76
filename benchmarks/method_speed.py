"""Method-level speed: answering a survey and the demographic survey, each fast mode against the naive
way measured in the same run (issue 7's CPU targets).

* answering, per answer: independent-context log-prob with the shared backstory prefix, against the
  same scoring with the full prompt per question, and against the paper's sequential sampled-and-parsed
  answers;
* demographic survey, per (persona, trait): log-prob against 40 parsed samples.

No response cache: every figure is model work.

    python benchmarks/method_speed.py                      # bundled smollm2-135m on this CPU
"""

from __future__ import annotations

import argparse
import random

import pandas as pd
from model_speed import backstory, timed

from anthology.method.answering import AskConfig, ask
from anthology.method.demographics import DemographicsConfig, survey_demographics
from anthology.models.registry import load_model
from anthology.surveys import load_survey


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--personas", type=int, default=16, help="panel for the fast modes")
    parser.add_argument("--naive-personas", type=int, default=2, help="panel for the slow ways")
    parser.add_argument("--tokens", type=int, default=400, help="backstory length")
    parser.add_argument("--samples", type=int, default=40, help="demographic samples per question")
    parser.add_argument(
        "--attempts", type=int, default=5, help="resamples of a non-compliant answer (paper: 100)"
    )
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    rng = random.Random(0)
    stories = [backstory(rng, model.tokenizer, args.tokens) for _ in range(args.personas)]
    panel = pd.DataFrame(
        {
            "method": "bench",
            "respondent_id": range(args.personas),
            "persona_id": None,
            "style": "completion",
            "context": stories,
        }
    )
    naive_panel = panel.head(args.naive_personas)
    backstories = pd.DataFrame(
        {
            "persona_id": [f"p{i}" for i in range(args.personas)],
            "style": "completion",
            "context": stories,
            "kept": True,
        }
    )
    questionnaire = load_survey("gss2018-spending").questionnaire
    fast = AskConfig(context="independent", mode="logprob")

    answers, t_shared = timed(lambda: ask(model, panel, questionnaire, config=fast)[0])
    model.share_prefix = False
    _, t_full = timed(lambda: ask(model, naive_panel, questionnaire, config=fast))
    model.share_prefix = True
    paper = AskConfig(context="sequential", mode="sample", max_attempts=args.attempts)
    sampled, t_sampled = timed(lambda: ask(model, naive_panel, questionnaire, config=paper)[0])

    per_shared = t_shared / len(answers)
    per_full = t_full / (len(naive_panel) * len(questionnaire))
    per_sampled = t_sampled / len(sampled)

    logprob = DemographicsConfig(mode="logprob")
    demo, t_demo = timed(lambda: survey_demographics(model, backstories, config=logprob))
    naive_stories = backstories.head(args.naive_personas)
    forty = DemographicsConfig(mode="sample", samples=args.samples)
    demo40, t_demo40 = timed(lambda: survey_demographics(model, naive_stories, config=forty))
    per_demo = t_demo / demo.groupby(["persona_id", "trait"]).ngroups
    per_demo40 = t_demo40 / demo40.groupby(["persona_id", "trait"]).ngroups

    print(
        f"model {args.model} on {model.device}; {args.tokens}-token backstories; "
        f"{len(questionnaire)} GSS questions; naive ways on {args.naive_personas} personas"
    )
    rows = [
        ("answer: independent log-prob, shared prefix", per_shared, None, None),
        ("answer: log-prob, full prompt per question", per_full, per_full / per_shared, ">= 5x"),
        ("answer: sequential sampled and parsed (paper)", per_sampled, per_sampled / per_shared, ">= 30x"),
        ("demographics: log-prob, per trait", per_demo, None, None),
        (
            f"demographics: {args.samples} parsed samples, per trait",
            per_demo40,
            per_demo40 / per_demo,
            ">= 20x",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'what'.ljust(width)}  {'seconds each':>12}  {'fast mode is':>12}  target")
    for what, seconds, ratio, target in rows:
        shown = f"{ratio:.1f}x faster" if ratio else ""
        print(f"{what.ljust(width)}  {seconds:12.3f}  {shown:>12}  {target or ''}")
    compliant = sampled["compliant"].mean()
    print(f"sampled answers compliant: {compliant:.0%}, mean attempts {sampled['attempts'].mean():.2f}")


if __name__ == "__main__":
    main()
