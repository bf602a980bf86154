module github.com/mailpush/mailpush

go 1.26.8
