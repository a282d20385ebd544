package main

import (
	"cmp"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
)

// newRenderCmd previews templates with sample data: one email to stdout, or (--all) a gallery
// of every kind in every locale, and every organization's own templates, for a browser.
func newRenderCmd(g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var locale, org, variant, out string
	var text, all bool
	cmd := &cobra.Command{
		Use:   "render KIND [--variant V] [--locale L] [--org ORG] [--text] | render --all --out DIR",
		Short: "Render an email with sample data (HTML, or --text), or write a gallery of all of them (--all --out DIR)",
		Long: "Renders with the configured templates (templates.dir), brand and locales, so an edited template can be\n" +
			"checked before the daemon uses it. KIND is one of " + strings.Join(kinds.Names(), ", ") + ".\n" +
			"--variant renders one of a kind's other samples (" + variantList() + ").\n" +
			"The subject and the template files used are printed to stderr.",
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usageError{fmt.Errorf("render --all takes no KIND")}
			case all && out == "":
				return usageError{fmt.Errorf("render --all needs --out DIR, where the gallery is written")}
			case !all && len(args) != 1:
				return usageError{fmt.Errorf("render takes one KIND (%s), or --all --out DIR", strings.Join(kinds.Names(), ", "))}
			case !all && !slices.Contains(kinds.Names(), args[0]):
				return usageError{fmt.Errorf("unknown kind %q (kinds: %s)", args[0], strings.Join(kinds.Names(), ", "))}
			case all && variant != "":
				return usageError{fmt.Errorf("render --all renders every variant; --variant is for one KIND")}
			}
			cfg, err := config.LoadForPreview(g.configPath, cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			templates, err := cfg.LoadTemplates()
			if err != nil {
				return err
			}
			now := time.Now()
			if all {
				previews, err := templates.WriteGallery(out, now)
				if err != nil {
					return fmt.Errorf("write the preview gallery to %s: %w", out, err)
				}
				fmt.Fprintf(stdout, "wrote %d previews (%d kinds and their variants, %d locales, %s with their own templates); open %s\n",
					len(previews), len(kinds.Names()), len(templates.Locales()), count(len(templates.Organizations()), "organization", "organizations"), filepath.Join(out, "index.html"))
				return nil
			}
			p, err := templates.RenderSample(args[0], variant, org, locale, now)
			if err != nil {
				return usageError{err}
			}
			fmt.Fprintf(stderr, "from: %s\nsubject: %s\nlocale: %s\ntemplates: %s\n", cmp.Or(p.Sender.From, cfg.Mailer.From), p.Subject, p.Locale, strings.Join(p.Files, ", "))
			if text {
				_, err = io.WriteString(stdout, p.Text)
			} else {
				_, err = io.WriteString(stdout, p.HTML)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&locale, "locale", "", "locale to render in (default: the organization's, else templates.default_locale)")
	cmd.Flags().StringVar(&variant, "variant", "", "render this variant of KIND's sample instead of its own ("+variantList()+")")
	cmd.Flags().StringVar(&org, "org", "", "organization id whose templates and locale to use")
	cmd.Flags().BoolVar(&text, "text", false, "print the plain-text version instead of the HTML")
	cmd.Flags().BoolVar(&all, "all", false, "render every kind in every locale (and every organization with its own templates) into --out")
	cmd.Flags().StringVar(&out, "out", "", "directory for --all: an index.html gallery and one HTML and one text file per email")
	return cmd
}

// variantList names every kind's sample variants, "invitation: reminder".
func variantList() string {
	var out []string
	for _, kind := range kinds.Names() {
		if v := mailer.Variants(kind); len(v) > 0 {
			out = append(out, kind+": "+strings.Join(v, ", "))
		}
	}
	return strings.Join(out, "; ")
}

// count is "1 organization", "2 organizations".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
