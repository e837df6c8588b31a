"""`tokeff generate`: greedy completion from any loadable model, the first sanity check."""

from __future__ import annotations

import argparse

from tokeff.errors import UserError

HELP = "Greedy completion of a prompt by a model (preset, gguf:..., hf:..., or checkpoint dir)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="preset name, gguf:smollm2-135m-instruct, hf:<id>, or a dir")
    parser.add_argument("--prompt", required=True, help="text to complete")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate (default 16)")
    parser.add_argument("--chat", action="store_true",
                        help="wrap the prompt as a user message in the model's chat template "
                             "(default: plain text completion)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")


def run(args: argparse.Namespace) -> int:
    from tokeff.models.generate import greedy_generate
    from tokeff.models.load import load_model
    from tokeff.models.tokenizer import decode, encode, render_chat

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: must be at least 1, got {args.max_new_tokens}")
    if not args.prompt:
        raise UserError("--prompt: empty prompt")
    loaded = load_model(args.model, dtype=args.dtype, field="--model")
    if loaded.tokenizer is None:
        raise UserError(f"--model: {args.model} has no tokenizer")
    text = args.prompt
    stops = [loaded.eos_id] if loaded.eos_id is not None else []
    if args.chat:
        if loaded.chat_template is None:
            raise UserError(f"--chat: {args.model} has no chat template")
        text = render_chat(loaded.chat_template, [{"role": "user", "content": args.prompt}])
        end_of_turn = loaded.tokenizer.token_to_id("<|im_end|>")
        stops += [end_of_turn] if end_of_turn is not None else []
    prompt_ids = encode(loaded.tokenizer, text)
    if len(prompt_ids) + args.max_new_tokens > loaded.config.max_seq_len:
        raise UserError(f"--max-new-tokens: prompt ({len(prompt_ids)} tokens) plus {args.max_new_tokens} "
                        f"exceeds the model's max_seq_len {loaded.config.max_seq_len}")
    completion = greedy_generate(loaded.model, prompt_ids, args.max_new_tokens, stops)
    print(args.prompt + decode(loaded.tokenizer, completion) if not args.chat else
          decode(loaded.tokenizer, completion))
    return 0
