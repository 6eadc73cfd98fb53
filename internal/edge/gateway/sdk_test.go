package gateway

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/egressd/egressd/policy"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
)

// The official SDKs, pointed at egressd's base URL with the agent token
// as their API key, with a fake provider behind that answers as the
// public API references show. They must parse egressd's answers and its
// refusals, and a refusal must not make them retry.

func (r *rig) openAI(provider string) openai.Client {
	return openai.NewClient(option.WithBaseURL(r.srv.URL+"/"+provider+"/"), option.WithAPIKey(agentToken),
		option.WithHTTPClient(r.srv.Client()))
}

func (r *rig) anthropic() anthropic.Client {
	return anthropic.NewClient(aoption.WithBaseURL(r.srv.URL+"/anthropic/"), aoption.WithAPIKey(agentToken),
		aoption.WithHTTPClient(r.srv.Client()))
}

// settled waits for n usage entries and returns the spend.
func (r *rig) settled(n int) float64 {
	r.t.Helper()
	waitFor(r.t, "the calls to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) >= n })
	return r.meter.Snapshot().SpentUSD
}

const chatToolCall = `{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"call_1","type":"function",` +
	`"function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],` +
	`"usage":{"prompt_tokens":50,"completion_tokens":20,"total_tokens":70}}`

func TestOpenAISDKChat(t *testing.T) {
	t.Run("tool call", func(t *testing.T) {
		r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(chatToolCall))
		})
		c := r.openAI("openai")
		got, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris?")},
			Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
				Name: "get_weather", Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
			})},
			ToolChoice:  openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")},
			Temperature: openai.Float(0.2),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Choices) != 1 || len(got.Choices[0].Message.ToolCalls) != 1 || got.Choices[0].Message.ToolCalls[0].Function.Name != "get_weather" {
			t.Fatalf("SDK parsed %+v, want one get_weather tool call", got.Choices)
		}
		if spent, want := r.settled(1), (50*0.15+20*0.6)/1e6; math.Abs(spent-want) > 1e-12 {
			t.Errorf("ledger $%v, provider billed $%v", spent, want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		r := newRig(t, serveFixture(t, "openai_chat_stream.sse"))
		c := r.openAI("openai")
		s := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Usage.CompletionTokens != 35 {
			t.Errorf("SDK saw usage %+v, want the final usage chunk", acc.Usage)
		}
		if spent, want := r.settled(1), (176*0.15+1024*0.075+35*0.6)/1e6; math.Abs(spent-want) > 1e-12 {
			t.Errorf("ledger $%v, provider billed $%v", spent, want)
		}
	})
	t.Run("model list", func(t *testing.T) {
		r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1,"owned_by":"openai"}]}`))
		})
		c := r.openAI("openrouter/api/v1")
		page, err := c.Models.List(context.Background())
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != "gpt-4o-mini" {
			t.Fatalf("got %+v, %v, want the model list", page, err)
		}
		if p := r.fake.requests()[0].Path; p != "/api/v1/models" {
			t.Errorf("provider received %s, want /api/v1/models", p)
		}
	})
}

func TestOpenAISDKResponses(t *testing.T) {
	for _, tt := range []struct {
		fixture string
		stream  bool
		want    float64
	}{
		{"openai_responses.json", false, (36*2 + 87*8) / 1e6},
		{"openai_responses_stream.sse", true, (300*2 + 200*0.5 + 80*8) / 1e6},
	} {
		t.Run(tt.fixture, func(t *testing.T) {
			r := newRig(t, serveFixture(t, tt.fixture))
			c := r.openAI("openai")
			params := responses.ResponseNewParams{Model: "gpt-4.1", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
				Tools: []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{Name: "f", Parameters: map[string]any{"type": "object"}}}}}
			if tt.stream {
				s := c.Responses.NewStreaming(context.Background(), params)
				n := 0
				for s.Next() {
					n++
				}
				if err := s.Err(); err != nil || n == 0 {
					t.Fatalf("stream: %d events, %v", n, err)
				}
			} else {
				got, err := c.Responses.New(context.Background(), params)
				if err != nil || got.Usage.OutputTokens != 87 {
					t.Fatalf("got %+v, %v", got, err)
				}
			}
			if spent := r.settled(1); math.Abs(spent-tt.want) > 1e-12 {
				t.Errorf("ledger $%v, provider billed $%v", spent, tt.want)
			}
		})
	}
}

// TestOpenAISDKRefusals: the SDK reads egressd's refusals as API errors
// with egressd's type, does not retry them, and the provider sees nothing.
func TestOpenAISDKRefusals(t *testing.T) {
	r := newRig(t, anyAnswer, withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.0001 }))
	c := r.openAI("openai")
	ctx := context.Background()
	_, budgetErr := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4.1", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(1000),
	})
	_, endpointErr := c.Responses.Get(ctx, "resp_123", responses.ResponseGetParams{})
	_, fieldErr := c.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4.1",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}, Background: openai.Bool(true)})
	_, toolErr := c.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4.1",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")},
		Tools: []responses.ToolUnionParam{{OfWebSearch: &responses.WebSearchToolParam{Type: responses.WebSearchToolTypeWebSearch}}}})
	for _, tt := range []struct {
		name     string
		err      error
		status   int
		wantType string
	}{
		{"budget", budgetErr, 429, "budget_exceeded"},
		{"stored response", endpointErr, 403, "endpoint_not_allowed"},
		{"background", fieldErr, 403, "field_not_allowed"},
		{"web search", toolErr, 403, "tool_not_allowed"},
	} {
		var apiErr *openai.Error
		if !errors.As(tt.err, &apiErr) || apiErr.StatusCode != tt.status || apiErr.Type != tt.wantType {
			t.Errorf("%s: got %v (%+v), want a %d %s API error", tt.name, tt.err, apiErr, tt.status, tt.wantType)
		}
	}
	if n := len(r.rec.ByEvent(vocab.EventDecision)); n != 4 {
		t.Errorf("gateway saw %d requests for 4 calls: the SDK retried a refusal", n)
	}
	if n := len(r.fake.requests()); n != 0 {
		t.Errorf("provider received %d calls, want none", n)
	}
}

const messagesToolUse = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",` +
	`"content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],` +
	`"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":40,"output_tokens":15,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`

func TestAnthropicSDKMessages(t *testing.T) {
	t.Run("tool use", func(t *testing.T) {
		r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(messagesToolUse))
		})
		c := r.anthropic()
		got, err := c.Messages.New(context.Background(), anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 256,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("weather in Paris?"))},
			Tools: []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "get_weather",
				InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"city": map[string]any{"type": "string"}}}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Content) != 2 || got.Content[1].Type != "tool_use" || got.Content[1].Name != "get_weather" {
			t.Fatalf("SDK parsed %+v, want a get_weather tool_use", got.Content)
		}
		if spent, want := r.settled(1), (40*3+15*15)/1e6; math.Abs(spent-want) > 1e-12 {
			t.Errorf("ledger $%v, provider billed $%v", spent, want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		r := newRig(t, serveFixture(t, "anthropic_stream.sse"))
		c := r.anthropic()
		s := c.Messages.NewStreaming(context.Background(), anthropic.MessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 1024,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		})
		var msg anthropic.Message
		for s.Next() {
			if err := msg.Accumulate(s.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if msg.Usage.OutputTokens != 42 {
			t.Errorf("SDK saw usage %+v, want 42 output tokens", msg.Usage)
		}
		if spent, want := r.settled(1), (25*3+3000*0.3+1000*3.75+42*15)/1e6; math.Abs(spent-want) > 1e-12 {
			t.Errorf("ledger $%v, provider billed $%v", spent, want)
		}
	})
}

func TestAnthropicSDKRefusals(t *testing.T) {
	r := newRig(t, anyAnswer, withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.0001 }))
	c := r.anthropic()
	ctx := context.Background()
	msgs := []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}
	_, budgetErr := c.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 1000, Messages: msgs})
	_, batchErr := c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{{
		CustomID: "a", Params: anthropic.MessageBatchNewParamsRequestParams{Model: "claude-sonnet-4-5", MaxTokens: 10, Messages: msgs}}}})
	_, toolErr := c.Messages.New(ctx, anthropic.MessageNewParams{Model: "claude-sonnet-4-5", MaxTokens: 10, Messages: msgs,
		Tools: []anthropic.ToolUnionParam{{OfWebSearchTool20250305: &anthropic.WebSearchTool20250305Param{}}}})
	for _, tt := range []struct {
		name     string
		err      error
		status   int
		wantType string
	}{
		{"budget", budgetErr, 429, "budget_exceeded"},
		{"batches", batchErr, 403, "endpoint_not_allowed"},
		{"web search", toolErr, 403, "tool_not_allowed"},
	} {
		var apiErr *anthropic.Error
		if !errors.As(tt.err, &apiErr) || apiErr.StatusCode != tt.status || !strings.Contains(apiErr.RawJSON(), tt.wantType) {
			t.Errorf("%s: got %v, want a %d %s API error", tt.name, tt.err, tt.status, tt.wantType)
		}
	}
	if n := len(r.rec.ByEvent(vocab.EventDecision)); n != 3 {
		t.Errorf("gateway saw %d requests for 3 calls: the SDK retried a refusal", n)
	}
	if n := len(r.fake.requests()); n != 0 {
		t.Errorf("provider received %d calls, want none", n)
	}
}
