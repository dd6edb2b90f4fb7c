package imds

import (
	"context"
	"sync"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// attempt is the outcome of one HTTP request as the transport saw it.
type attempt struct {
	path   string
	status int   // 0 when no response came
	err    error // the transport's error, if any
}

// transportRecorder keeps the last attempt of one read, the token requests
// included. It lives in the read's context.
type transportRecorder struct {
	mu   sync.Mutex
	prev attempt
}

func (r *transportRecorder) record(a attempt) {
	r.mu.Lock()
	r.prev = a
	r.mu.Unlock()
}

func (r *transportRecorder) last() attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prev
}

type recorderKey struct{}

func withTransportRecorder(ctx context.Context, r *transportRecorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

// addTransportRecorder adds, next to the transport of every operation of
// the client (the SDK's own getToken included), a middleware that records
// each request's outcome in the context's transportRecorder, if any.
func addTransportRecorder(stack *middleware.Stack) error {
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("LastcallTransportRecorder",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
			middleware.DeserializeOutput, middleware.Metadata, error,
		) {
			out, md, err := next.HandleDeserialize(ctx, in)
			rec, _ := ctx.Value(recorderKey{}).(*transportRecorder)
			if rec == nil {
				return out, md, err
			}
			a := attempt{err: err}
			if req, ok := in.Request.(*smithyhttp.Request); ok && req.URL != nil {
				a.path = req.URL.Path
			}
			if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Response != nil {
				a.status = resp.StatusCode
			}
			rec.record(a)
			return out, md, err
		}), middleware.After)
}
