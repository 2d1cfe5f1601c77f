"""CLARA: retrieval-augmented in-context pseudo-labelling of chat logs with self-consistency (see README.md).

retrieval        DemoIndex, Retriever (LARA demos for whole sessions), Demo
prompts          PromptTemplate (conf/prompt/*.yaml), load_prompt, answer parsing
llm              build_llm; LocalLLM (generate | score), OpenAILLM (retries, concurrency; score = vLLM guided
                 choice); AnswerCache, CachedLLM
self_consistency orderings (ascending, descending, random), agree (unanimous | majority)
labeler          SessionLabeler: demos -> n prompts -> LLM -> answers -> vote, one record per session
pseudo_label     pseudo_label (resumable JSONL + kept sessions + summary), table4_markdown
engine           where labelling runs (pipeline/engine): InProcess, build_engine; ray_engine: RayEngine
shards           deterministic resumable shards of a labelling run and their merge
candidates       htc_candidates: a single-turn HTC checkpoint as the candidate proposer
The pipelines (lara, lara_pl, clara) live in mtic.pipelines.clara.
"""
