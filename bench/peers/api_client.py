"""One peer arm of bench/peers/api.py: N requests at concurrency C from one asyncio loop, then a JSON line.

Runs in the peer's own interpreter (aiohttp's or Curator's venv under /tmp/abp-peers, or the project's
for the SDK loops), so it imports nothing from agentic_batch: the request body (system prompt, tool
definitions, model) comes from the JSON file api.py writes, identical to what abp's workers send.

    python api_client.py MODE BASE_URL UNITS CONCURRENCY BODY.json

MODE: `aiohttp-openai` (POST /chat/completions with aiohttp, json.loads of the answer),
`openai-sdk` (`AsyncOpenAI().chat.completions.create`), `curator` (`curator.LLM` with the openai
backend, its cache off), `aiohttp-anthropic` (POST /v1/messages with aiohttp), `anthropic-sdk`
(`AsyncAnthropic().messages.create`). Every answer is checked (the echo text for the item).

Prints `{"seconds": the timed part, "cpu_s": this process's CPU in it (all its threads), "process_s":
interpreter start to the end, "answers": N}`. The
timed part is the requests only (the client built, before the first request; after the last answer),
except for Curator, where it is the `llm(dataset)` call: Curator builds its request files, its
rate-limit probe and its response dataset inside that call, and that is what a user waits for.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

PROCESS_T0 = time.time()
PROMPT = "Repeat the title: item {i}"


def openai_messages(body: dict, i: int) -> list[dict]:
    return [{"role": "system", "content": body["system"]}, {"role": "user", "content": PROMPT.format(i=i)}]


async def aiohttp_loop(url: str, units: int, concurrency: int, body: dict, anthropic: bool) -> int:
    import aiohttp

    if anthropic:
        endpoint = url.rstrip("/") + "/v1/messages"
        headers = {"x-api-key": "sk-dummy-bench", "anthropic-version": "2023-06-01"}
    else:
        endpoint = url.rstrip("/") + "/chat/completions"
        headers = {"authorization": "Bearer sk-dummy-bench"}
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def one(i: int) -> int:
            if anthropic:
                request = {"model": body["model"], "max_tokens": body["max_tokens"], "system": body["system"],
                           "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
                           "tools": body["tools_anthropic"]}
            else:
                request = {"model": body["model"], "messages": openai_messages(body, i), "tools": body["tools_openai"]}
            async with sem, session.post(endpoint, json=request) as response:
                response.raise_for_status()
                answer = json.loads(await response.read())
            text = answer["content"][0]["text"] if anthropic else answer["choices"][0]["message"]["content"]
            return int(f"item {i}" in text)

        return sum(await asyncio.gather(*(one(i) for i in range(units))))


async def openai_sdk_loop(url: str, units: int, concurrency: int, body: dict) -> int:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="sk-dummy-bench", base_url=url, max_retries=0, timeout=600)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            reply = await client.chat.completions.create(model=body["model"], messages=openai_messages(body, i),
                                                         tools=body["tools_openai"], timeout=600)
        return int(f"item {i}" in (reply.choices[0].message.content or ""))

    try:
        return sum(await asyncio.gather(*(one(i) for i in range(units))))
    finally:
        await client.close()


async def anthropic_sdk_loop(url: str, units: int, concurrency: int, body: dict) -> int:
    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(api_key="sk-dummy-bench", base_url=url, max_retries=0, timeout=600)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with sem:
            reply = await client.messages.create(model=body["model"], max_tokens=body["max_tokens"],
                                                 system=body["system"], tools=body["tools_anthropic"],
                                                 messages=[{"role": "user", "content": PROMPT.format(i=i)}],
                                                 timeout=600)
        return int(f"item {i}" in reply.content[0].text)

    try:
        return sum(await asyncio.gather(*(one(i) for i in range(units))))
    finally:
        await client.close()


def timed(coro_fn, *args) -> tuple[float, float, int]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    answers = asyncio.run(coro_fn(*args))
    return time.perf_counter() - t0, time.process_time() - cpu0, answers


def curator_run(url: str, units: int, concurrency: int, body: dict) -> tuple[float, float, int]:
    """Curator's LLM over a dataset of N rows, its openai backend pointed at the local server."""
    os.environ.setdefault("CURATOR_CACHE_DIR", os.path.join(os.getcwd(), "curator-cache"))
    from bespokelabs import curator
    from datasets import Dataset

    system, tools = body["system"], body["tools_openai"]

    class Repeat(curator.LLM):
        def prompt(self, row: dict) -> list[dict]:
            return [{"role": "system", "content": system}, {"role": "user", "content": PROMPT.format(i=row["i"])}]

        def parse(self, row: dict, response: str) -> dict:
            return {"i": row["i"], "ok": int(f"item {row['i']}" in (response or ""))}

    llm = Repeat(model_name=body["model"], backend="openai",
                 generation_params={"tools": tools},
                 backend_params={"base_url": url, "api_key": "sk-dummy-bench",
                                 "max_concurrent_requests": concurrency,
                                 "max_requests_per_minute": 1_000_000, "max_tokens_per_minute": 1_000_000_000,
                                 "max_retries": 0, "request_timeout": 600})
    dataset = Dataset.from_dict({"i": list(range(units))})
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = llm(dataset)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rows = result.dataset if hasattr(result, "dataset") else result
    return seconds, cpu, sum(rows["ok"])


def main() -> None:
    mode, url, units, concurrency, body_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with open(body_path) as fh:
        body = json.load(fh)
    if mode == "aiohttp-openai":
        seconds, cpu, answers = timed(aiohttp_loop, url, units, concurrency, body, False)
    elif mode == "aiohttp-anthropic":
        seconds, cpu, answers = timed(aiohttp_loop, url, units, concurrency, body, True)
    elif mode == "openai-sdk":
        seconds, cpu, answers = timed(openai_sdk_loop, url, units, concurrency, body)
    elif mode == "anthropic-sdk":
        seconds, cpu, answers = timed(anthropic_sdk_loop, url, units, concurrency, body)
    elif mode == "curator":
        seconds, cpu, answers = curator_run(url, units, concurrency, body)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.flush()
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "process_s": time.time() - PROCESS_T0, "answers": answers}),
          flush=True)
    os._exit(0)  # no interpreter teardown in the figures (Curator's threads, datasets' caches)


if __name__ == "__main__":
    main()
