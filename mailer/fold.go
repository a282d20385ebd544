package mailer

import (
	"regexp"
	"strconv"
	"strings"
	"text/template/parse"
)

// Folding messages into the templates. A template asks for its words with {{t "key" "name"
// .Field ...}}; executing that is a reflective function call that allocates, about twenty
// times per email. The message of a locale is known when its templates are compiled, so such
// an action is replaced by the message itself: its text as template text (HTML-escaped in HTML
// templates, where html/template leaves template text alone) and each placeholder as an action
// printing the argument, which html/template then escapes for where it stands, as it escaped
// what t returned. A message used as a value, e.g. {{template "heading" (t ...)}}, becomes a
// string constant when it has no placeholders. Plural messages (they depend on a number) and
// values with placeholders stay calls. Rendering is the same either way; the golden
// files hold it to that.

// foldMessages rewrites the t actions of tree for cat. escape is how message text is written
// into the template: html.EscapeString for HTML, identity for text.
func foldMessages(tree *parse.Tree, cat *catalog, escape func(string) string) {
	if tree != nil {
		foldList(tree.Root, cat, escape)
	}
}

func foldList(list *parse.ListNode, cat *catalog, escape func(string) string) {
	if list == nil {
		return
	}
	for i, n := range list.Nodes {
		switch n := n.(type) {
		case *parse.ActionNode:
			if folded := foldAction(n, cat, escape); folded != nil {
				list.Nodes[i] = folded
			} else {
				foldArgs(n.Pipe, cat)
			}
		case *parse.TemplateNode:
			foldArgs(n.Pipe, cat)
		case *parse.IfNode:
			foldList(n.List, cat, escape)
			foldList(n.ElseList, cat, escape)
		case *parse.RangeNode:
			foldList(n.List, cat, escape)
			foldList(n.ElseList, cat, escape)
		case *parse.WithNode:
			foldList(n.List, cat, escape)
			foldList(n.ElseList, cat, escape)
		case *parse.ListNode:
			foldList(n, cat, escape)
		}
	}
}

// foldArgs replaces arguments (t "key") whose message has no placeholders with the message as a
// string constant, which prints (and is escaped) as what t returned would.
func foldArgs(pipe *parse.PipeNode, cat *catalog) {
	if pipe == nil {
		return
	}
	for _, cmd := range pipe.Cmds {
		for i, arg := range cmd.Args {
			p, ok := arg.(*parse.PipeNode)
			if !ok || len(p.Decl) > 0 || len(p.Cmds) != 1 {
				continue
			}
			inner := p.Cmds[0].Args
			if id, ok := inner[0].(*parse.IdentifierNode); !ok || id.Ident != "t" {
				foldArgs(p, cat)
				continue
			}
			if len(inner) != 2 {
				foldArgs(p, cat) // its own arguments may fold
				continue
			}
			key, ok := inner[1].(*parse.StringNode)
			if !ok {
				continue
			}
			if m, ok := cat.messages[key.Text]; ok && m.forms == nil && !hasPlaceholder.MatchString(m.text) {
				cmd.Args[i] = &parse.StringNode{NodeType: parse.NodeString, Pos: p.Pos, Quoted: strconv.Quote(m.text), Text: m.text}
			}
		}
	}
}

// hasPlaceholder finds a {name} placeholder.
var hasPlaceholder = regexp.MustCompile(`\{[A-Za-z0-9_]+\}`)

// foldAction returns the message an action {{t "key" "name" value ...}} prints, as template
// nodes, or nil to leave the action as it is.
func foldAction(a *parse.ActionNode, cat *catalog, escape func(string) string) parse.Node {
	if len(a.Pipe.Decl) > 0 || len(a.Pipe.Cmds) != 1 {
		return nil
	}
	args := a.Pipe.Cmds[0].Args
	if len(args) < 2 || len(args)%2 != 0 {
		return nil
	}
	if id, ok := args[0].(*parse.IdentifierNode); !ok || id.Ident != "t" {
		return nil
	}
	key, ok := args[1].(*parse.StringNode)
	if !ok {
		return nil
	}
	m, ok := cat.messages[key.Text]
	if !ok || m.forms != nil {
		return nil // an unknown key fails at the check with sample data, with file and line
	}
	values := map[string]parse.Node{}
	for i := 2; i < len(args); i += 2 {
		name, ok := args[i].(*parse.StringNode)
		if !ok {
			return nil
		}
		values[name.Text] = args[i+1]
	}
	out := &parse.ListNode{NodeType: parse.NodeList, Pos: a.Pos}
	text := m.text
	literal := func(s string) {
		if s != "" {
			out.Nodes = append(out.Nodes, &parse.TextNode{NodeType: parse.NodeText, Pos: a.Pos, Text: []byte(escape(s))})
		}
	}
	for {
		open := strings.IndexByte(text, '{')
		end := -1
		if open >= 0 {
			end = strings.IndexByte(text[open:], '}')
		}
		if end < 0 {
			break
		}
		v, ok := values[text[open+1:open+end]]
		if !ok {
			literal(text[:open+end+1]) // stays as written, as expand leaves it
			text = text[open+end+1:]
			continue
		}
		literal(text[:open])
		act := printing(a, v)
		if folded := foldAction(act, cat, escape); folded != nil {
			out.Nodes = append(out.Nodes, folded) // (t "other.key") as a value: folded too
		} else {
			foldArgs(act.Pipe, cat)
			out.Nodes = append(out.Nodes, act)
		}
		text = text[open+end+1:]
	}
	literal(text)
	return out
}

// printing is an action that prints the value v of a t argument: {{v}}, or for a parenthesized
// pipeline such as (strong .OrganizationName), {{strong .OrganizationName}}.
func printing(a *parse.ActionNode, v parse.Node) *parse.ActionNode {
	pipe := &parse.PipeNode{NodeType: parse.NodePipe, Pos: a.Pos, Line: a.Line}
	if p, ok := v.(*parse.PipeNode); ok && len(p.Decl) == 0 {
		pipe.Cmds = p.Cmds
	} else {
		pipe.Cmds = []*parse.CommandNode{{NodeType: parse.NodeCommand, Pos: a.Pos, Args: []parse.Node{v}}}
	}
	return &parse.ActionNode{NodeType: parse.NodeAction, Pos: a.Pos, Line: a.Line, Pipe: pipe}
}
